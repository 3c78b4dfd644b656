package syncgw_test

import "github.com/pulsebase/pulsebase/internal/processor"

// processorCursor encodes a cursor of epoch and seq for user.
func processorCursor(epoch int64, seq uint64, user string) string {
	return processor.Cursor{Epoch: epoch, Seq: seq}.Encode(user)
}
