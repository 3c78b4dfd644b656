package broker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats-server/v2/server"
)

// serverLogger routes the embedded nats-server's log lines to slog, so the
// server never writes to stdout on its own. Its notices (startup banners,
// client connects) are routine for an embedded server and go to debug.
type serverLogger struct{ log *slog.Logger }

var _ server.Logger = serverLogger{}

func newServerLogger(log *slog.Logger) serverLogger {
	return serverLogger{log: log.With("component", "nats-server")}
}

func (l serverLogger) logf(level slog.Level, format string, v []any) {
	// Skip formatting for disabled levels: the server logs per connection.
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (l serverLogger) Noticef(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }
func (l serverLogger) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l serverLogger) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l serverLogger) Debugf(format string, v ...any)  { l.logf(slog.LevelDebug, format, v) }
func (l serverLogger) Tracef(string, ...any)           {} // protocol traces are never wanted

// Fatalf logs at error level and does not exit: the server calls it for
// failures such as JetStream not starting, which Open detects and returns
// as an error.
func (l serverLogger) Fatalf(format string, v ...any) { l.logf(slog.LevelError, format, v) }
