package crdt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// TestApplyValues sets every path to values it takes and values it does not: a valid one
// shows in View as given, an invalid one gets its code and changes nothing.
func TestApplyValues(t *testing.T) {
	type tc struct {
		kind  Kind
		path  string
		value string // JSON
		code  string // "" for valid
		view  string // for valid ones: the View member it gives, as JSON
	}
	tests := []tc{
		{KindSet, "goals.steps", `8000`, "", `"goals":{"steps":8000}`},
		{KindSet, "goals.steps", `0`, "", `"goals":{"steps":0}`},
		{KindSet, "goals.steps", `100000`, "", `"goals":{"steps":100000}`},
		{KindSet, "goals.steps", `100001`, CodeInvalidValue, ""},
		{KindSet, "goals.steps", `-1`, CodeInvalidValue, ""},
		{KindSet, "goals.steps", `8000.5`, CodeInvalidValue, ""},
		{KindSet, "goals.steps", `8000.0`, CodeInvalidValue, ""},
		{KindSet, "goals.steps", `8e3`, CodeInvalidValue, ""},
		{KindSet, "goals.steps", `"8000"`, CodeInvalidValue, ""},
		{KindSet, "goals.steps", `99999999999999999999`, CodeInvalidValue, ""},
		{KindSet, "goals.steps", `null`, "", `"goals":{}`},
		{KindSet, "goals.steps", `8000 8000`, CodeInvalidValue, ""},
		{KindSet, "goals.sleep_minutes", `480`, "", `"goals":{"sleep_minutes":480}`},
		{KindSet, "goals.sleep_minutes", `1440`, "", `"goals":{"sleep_minutes":1440}`},
		{KindSet, "goals.sleep_minutes", `1441`, CodeInvalidValue, ""},
		{KindSet, "goals.active_minutes", `30`, "", `"goals":{"active_minutes":30}`},
		{KindSet, "goals.active_minutes", `-30`, CodeInvalidValue, ""},
		{KindSet, "goals.active_minutes", `true`, CodeInvalidValue, ""},
		{KindSet, "goals.water_ml", `2000`, "", `"goals":{"water_ml":2000}`},
		{KindSet, "goals.water_ml", `10001`, CodeInvalidValue, ""},
		{KindSet, "units", `"metric"`, "", `"units":"metric"`},
		{KindSet, "units", `"imperial"`, "", `"units":"imperial"`},
		{KindSet, "units", `"Metric"`, CodeInvalidValue, ""},
		{KindSet, "units", `1`, CodeInvalidValue, ""},
		{KindSet, "time_zone", `"America/Chicago"`, "", `"time_zone":"America/Chicago"`},
		{KindSet, "time_zone", `"UTC"`, "", `"time_zone":"UTC"`},
		{KindSet, "time_zone", `"Etc/GMT+5"`, "", `"time_zone":"Etc/GMT+5"`},
		{KindSet, "time_zone", `"America/Atlantis"`, CodeInvalidValue, ""},
		{KindSet, "time_zone", `"Local"`, CodeInvalidValue, ""},
		{KindSet, "time_zone", `""`, CodeInvalidValue, ""},
		{KindSet, "time_zone", `"../../etc/passwd"`, CodeInvalidValue, ""},
		{KindSet, "time_zone", `"/etc/localtime"`, CodeInvalidValue, ""},
		{KindSet, "time_zone", `"-06:00"`, CodeInvalidValue, ""},
		{KindSet, "quiet_hours", `{"start":"22:00","end":"07:00"}`, "", `"quiet_hours":{"end":"07:00","start":"22:00"}`},
		{KindSet, "quiet_hours", ` { "end" : "07:00", "start" : "22:00" } `, "", `"quiet_hours":{"end":"07:00","start":"22:00"}`},
		{KindSet, "quiet_hours", `{"start":"00:00","end":"23:59"}`, "", `"quiet_hours":{"end":"23:59","start":"00:00"}`},
		{KindSet, "quiet_hours", `{"start":"22:00","end":"22:00"}`, CodeInvalidValue, ""},
		{KindSet, "quiet_hours", `{"start":"24:00","end":"07:00"}`, CodeInvalidValue, ""},
		{KindSet, "quiet_hours", `{"start":"22:60","end":"07:00"}`, CodeInvalidValue, ""},
		{KindSet, "quiet_hours", `{"start":"7:00","end":"22:00"}`, CodeInvalidValue, ""},
		{KindSet, "quiet_hours", `{"start":"22:00"}`, CodeInvalidValue, ""},
		{KindSet, "quiet_hours", `{"start":"22:00","end":"07:00","days":[1]}`, CodeInvalidValue, ""},
		{KindSet, "quiet_hours", `"22:00-07:00"`, CodeInvalidValue, ""},
		{KindSet, "active_hours", `{"start":"08:00","end":"20:30"}`, "", `"active_hours":{"end":"20:30","start":"08:00"}`},
		{KindSet, "active_hours", `{"start":"08:00","end":null}`, CodeInvalidValue, ""},
		{KindSet, "active_hours", `null`, "", `"goals":{}`},
		{KindAdd, "enabled_nudges", `"bedtime"`, "", `"enabled_nudges":["bedtime"]`},
		{KindAdd, "enabled_nudges", `"celebrate"`, "", `"enabled_nudges":["celebrate"]`},
		{KindAdd, "enabled_nudges", `"streak"`, CodeInvalidValue, ""},
		{KindAdd, "enabled_nudges", `null`, CodeInvalidValue, ""},
		{KindAdd, "enabled_nudges", `["bedtime"]`, CodeInvalidValue, ""},
		{KindAdd, "favourite_activities", `"Yoga"`, "", `"favourite_activities":["Yoga"]`},
		{KindAdd, "favourite_activities", `"Tai chi 太極"`, "", `"favourite_activities":["Tai chi 太極"]`},
		{KindAdd, "favourite_activities", strconv.Quote(strings.Repeat("é", 64)), "", `"favourite_activities":[` + strconv.Quote(strings.Repeat("é", 64)) + `]`},
		{KindAdd, "favourite_activities", strconv.Quote(strings.Repeat("é", 65)), CodeInvalidValue, ""},
		{KindAdd, "favourite_activities", `""`, CodeInvalidValue, ""},
		{KindAdd, "favourite_activities", `"Yoga "`, CodeInvalidValue, ""},
		{KindAdd, "favourite_activities", `" Yoga"`, CodeInvalidValue, ""},
		{KindAdd, "favourite_activities", `"Yo\nga"`, CodeInvalidValue, ""},
		{KindAdd, "favourite_activities", `42`, CodeInvalidValue, ""},
		{KindIncr, "water_glasses.2026-11-29", `1`, "", `"water_glasses":{"2026-11-29":1}`},
		{KindIncr, "water_glasses.2026-11-29", `-20`, "", `"water_glasses":{"2026-11-29":-20}`},
		{KindIncr, "water_glasses.2026-11-29", `20`, "", `"water_glasses":{"2026-11-29":20}`},
		{KindIncr, "water_glasses.2026-11-29", `21`, CodeInvalidValue, ""},
		{KindIncr, "water_glasses.2026-11-29", `0`, CodeInvalidValue, ""},
		{KindIncr, "water_glasses.2026-11-29", `1.5`, CodeInvalidValue, ""},
		{KindIncr, "water_glasses.2026-11-22", `1`, "", `"water_glasses":{"2026-11-22":1}`},
		{KindIncr, "water_glasses.2026-11-30", `1`, "", `"water_glasses":{"2026-11-30":1}`},
		{KindIncr, "water_glasses.2026-11-21", `1`, CodeInvalidPath, ""}, // 8 days before the op
		{KindIncr, "water_glasses.2026-12-01", `1`, CodeInvalidPath, ""}, // 2 days after
		{KindIncr, "water_glasses.2026-11-31", `1`, CodeInvalidPath, ""},
		{KindIncr, "water_glasses.2026-1-29", `1`, CodeInvalidPath, ""},
		{KindIncr, "water_glasses.", `1`, CodeInvalidPath, ""},
		{KindIncr, "water_glasses", `1`, CodeInvalidPath, ""},
		{KindSet, "goals", `{"steps":1}`, CodeInvalidPath, ""},
		{KindSet, "goals.calories", `1`, CodeInvalidPath, ""},
		{KindSet, "Units", `"metric"`, CodeInvalidPath, ""},
		{KindSet, "", `1`, CodeInvalidPath, ""},
		// The kind a path takes.
		{KindAdd, "goals.steps", `1`, CodeInvalidOp, ""},
		{KindIncr, "goals.steps", `1`, CodeInvalidOp, ""},
		{KindSet, "enabled_nudges", `["bedtime"]`, CodeInvalidOp, ""},
		{KindIncr, "enabled_nudges", `1`, CodeInvalidOp, ""},
		{KindSet, "water_glasses.2026-11-29", `3`, CodeInvalidOp, ""},
		{KindRemove, "water_glasses.2026-11-29", `1`, CodeInvalidOp, ""},
		{"delete", "goals.steps", `1`, CodeInvalidOp, ""},
		{"", "goals.steps", `1`, CodeInvalidOp, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s %s", tt.kind, tt.path, tt.value), func(t *testing.T) {
			d := New()
			empty := encode(t, d)
			op := Op{ID: "phone:1", TS: Timestamp{Wall: t0.UnixMilli(), Node: "phone"}, Kind: tt.kind, Path: tt.path, Value: json.RawMessage(tt.value)}
			applied, err := d.Apply(op)
			if tt.code != "" {
				if err == nil {
					t.Fatalf("Apply: got applied=%v, nil, want code %s", applied, tt.code)
				}
				if got := codeOf(t, err); got != tt.code || applied {
					t.Fatalf("Apply: got %v, %v, want false and code %s", applied, err, tt.code)
				}
				if !bytes.Equal(encode(t, d), empty) {
					t.Fatal("a refused op changed the document")
				}
				if err := op.Validate(); err == nil || codeOf(t, err) != tt.code {
					t.Fatalf("Validate: got %v, want code %s like Apply", err, tt.code)
				}
				return
			}
			if err != nil || !applied {
				t.Fatalf("Apply: got %v, %v, want true, nil", applied, err)
			}
			if got := viewJSON(t, d); !strings.Contains(got, tt.view) {
				t.Fatalf("View: got %s, want it to contain %s", got, tt.view)
			}
		})
	}
}

// TestViewShape: an empty profile and a full one look as GET /v1/users/{user}/profile
// documents them.
func TestViewShape(t *testing.T) {
	d := New()
	if got, want := viewJSON(t, d), `{"enabled_nudges":[],"favourite_activities":[],"goals":{},"water_glasses":{}}`; got != want {
		t.Fatalf("empty View: got %s, want %s", got, want)
	}
	a := newAuthor("phone")
	for _, op := range []Op{
		a.op(t0, KindSet, "goals.steps", 8000, nil),
		a.op(t0, KindSet, "goals.sleep_minutes", 480, nil),
		a.op(t0, KindSet, "goals.active_minutes", 30, nil),
		a.op(t0, KindSet, "goals.water_ml", 2000, nil),
		a.op(t0, KindSet, "units", "metric", nil),
		a.op(t0, KindSet, "time_zone", "America/Chicago", nil),
		a.op(t0, KindSet, "quiet_hours", hours{"22:00", "07:00"}, nil),
		a.op(t0, KindSet, "active_hours", hours{"08:00", "20:00"}, nil),
		a.op(t0, KindAdd, "enabled_nudges", "hydration", nil),
		a.op(t0, KindAdd, "enabled_nudges", "bedtime", nil),
		a.op(t0, KindAdd, "favourite_activities", "Yoga", nil),
		a.op(t0, KindAdd, "favourite_activities", "Cycling", nil),
		a.op(t0, KindIncr, "water_glasses.2026-11-29", 2, nil),
		a.op(t0, KindIncr, "water_glasses.2026-11-29", 1, nil),
		a.op(t0, KindIncr, "water_glasses.2026-11-28", 5, nil),
	} {
		mustApply(t, d, op)
	}
	want := `{"active_hours":{"end":"20:00","start":"08:00"},"enabled_nudges":["bedtime","hydration"],` +
		`"favourite_activities":["Cycling","Yoga"],"goals":{"active_minutes":30,"sleep_minutes":480,"steps":8000,"water_ml":2000},` +
		`"quiet_hours":{"end":"07:00","start":"22:00"},"time_zone":"America/Chicago","units":"metric",` +
		`"water_glasses":{"2026-11-28":5,"2026-11-29":3}}`
	if got := viewJSON(t, d); got != want {
		t.Fatalf("View:\ngot  %s\nwant %s", got, want)
	}
}

// TestDuplicate: an op applied again, alone or after later ops, is reported and ignored.
func TestDuplicate(t *testing.T) {
	d := New()
	a := newAuthor("phone")
	incr := a.op(t0, KindIncr, "water_glasses.2026-11-29", 1, nil)
	set := a.op(t0, KindSet, "goals.steps", 9000, nil)
	mustApply(t, d, incr)
	mustApply(t, d, set)
	want := encode(t, d)
	for _, op := range []Op{incr, set, incr} {
		if applied, err := d.Apply(op); applied || err != nil {
			t.Fatalf("Apply(%s) again: got %v, %v, want false, nil", op.ID, applied, err)
		}
	}
	if !bytes.Equal(encode(t, d), want) {
		t.Fatalf("duplicates changed the document: %s", viewJSON(t, d))
	}
	if got := d.Seen("phone"); got != 2 {
		t.Fatalf("Seen(phone): got %d, want 2", got)
	}
}

// TestLastWriterWins: the later timestamp wins in either order; at the same wall and
// logical the larger device id; a device that sent two ops under one id still converges.
func TestLastWriterWins(t *testing.T) {
	op := func(id string, wall int64, logical uint32, value string) Op {
		dev, _, _ := strings.Cut(id, ":")
		return Op{ID: id, TS: Timestamp{Wall: wall, Logical: logical, Node: dev}, Kind: KindSet, Path: "goals.steps", Value: json.RawMessage(value)}
	}
	w := t0.UnixMilli()
	tests := []struct {
		name string
		a, b Op
		want string
	}{
		{"later wall", op("phone:1", w+1, 0, "1"), op("watch:1", w, 9, "2"), `"steps":1`},
		{"later logical", op("phone:1", w, 1, "1"), op("watch:1", w, 0, "2"), `"steps":1`},
		{"tie broken by device", op("phone:1", w, 0, "1"), op("watch:1", w, 0, "2"), `"steps":2`},
		{"a later null clears", op("phone:1", w, 0, "1"), op("watch:1", w+1, 0, "null"), `"goals":{}`},
		{"same ts, larger seq", op("phone:2", w, 0, "1"), op("phone:1", w, 0, "2"), `"steps":1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, order := range [][]Op{{tt.a, tt.b}, {tt.b, tt.a}} {
				d := New()
				for _, o := range order {
					if _, err := d.Apply(o); err != nil {
						t.Fatal(err)
					}
				}
				got = append(got, viewJSON(t, d))
			}
			if !strings.Contains(got[0], tt.want) || got[0] != got[1] {
				t.Fatalf("got %s and %s in the two orders, want both to contain %s", got[0], got[1], tt.want)
			}
		})
	}
	// A device that sent two ops under one id is a bug the server stops (the second is a
	// duplicate there, and other replicas only get what the server passes on); should two
	// states hold one each, merging them still resolves the same both ways.
	a, b := New(), New()
	mustApply(t, a, op("phone:1", w, 0, "1"))
	mustApply(t, b, op("phone:1", w, 0, "2"))
	ab, ba := roundTrip(t, a), roundTrip(t, b)
	if err := ab.Merge(b); err != nil {
		t.Fatal(err)
	}
	if err := ba.Merge(a); err != nil {
		t.Fatal(err)
	}
	if got, other := viewJSON(t, ab), viewJSON(t, ba); got != other || !strings.Contains(got, `"steps":2`) {
		t.Fatalf("merging two ops with one id: got %s and %s, want both to have steps 2", got, other)
	}
}

// TestAddWins walks through the set's rules: a remove cancels the adds it observed and
// only those, whatever order the devices' ops arrive in (each device's in its own order).
func TestAddWins(t *testing.T) {
	phone, watch, ring := newAuthor("phone"), newAuthor("watch"), newAuthor("ring")
	const path = "favourite_activities"
	add1 := phone.op(t0, KindAdd, path, "Yoga", nil)                                                             // phone:1
	add2 := watch.op(t0, KindAdd, path, "Yoga", nil)                                                             // watch:1, concurrent with rm
	rm := ring.op(t0.Add(time.Second), KindRemove, path, "Yoga", map[string]uint64{"phone": 1})                  // ring:1, saw add1 only
	readd := phone.op(t0.Add(2*time.Second), KindAdd, path, "Yoga", nil)                                         // phone:2
	rmAll := ring.op(t0.Add(3*time.Second), KindRemove, path, "Yoga", map[string]uint64{"phone": 2, "watch": 1}) // ring:2

	tests := []struct {
		name string
		ops  []Op
		want string
	}{
		{"add", []Op{add1}, `["Yoga"]`},
		{"add, remove", []Op{add1, rm}, `[]`},
		{"remove before the add it cancels", []Op{rm, add1}, `[]`},
		{"concurrent add wins", []Op{add1, add2, rm}, `["Yoga"]`},
		{"concurrent add wins, any order", []Op{rm, add2, add1}, `["Yoga"]`},
		{"re-add after remove", []Op{add1, rm, readd}, `["Yoga"]`},
		{"re-add after a remove that overtook the first add", []Op{rm, add1, readd}, `["Yoga"]`},
		{"remove of everything observed", []Op{add1, add2, rm, readd, rmAll}, `[]`},
		{"remove of everything observed, before the adds", []Op{rm, rmAll, add2, add1, readd}, `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New()
			for _, op := range tt.ops {
				mustApply(t, d, op)
			}
			got, _ := json.Marshal(d.View()[path])
			if string(got) != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if n := countTombstones(d); n != 0 {
				t.Fatalf("every add has arrived, yet a tombstone remains: %v", d.sets)
			}
		})
	}
}

// TestTombstones: a remove that overtakes its add leaves a tombstone that goes once the
// add's device catches up, and only then; Observed gives what a remove must carry.
func TestTombstones(t *testing.T) {
	d := New()
	watch := newAuthor("watch")
	mustApply(t, d, watch.op(t0, KindAdd, "enabled_nudges", "bedtime", nil)) // watch:1
	if got := d.Observed("enabled_nudges", "bedtime"); len(got) != 1 || got["watch"] != 1 {
		t.Fatalf("Observed: got %v, want map[watch:1]", got)
	}
	// The phone removes hydration having seen the watch add it at watch:3, which has not
	// arrived here.
	rm := Op{ID: "phone:1", TS: Timestamp{Wall: t0.UnixMilli(), Node: "phone"}, Kind: KindRemove, Path: "enabled_nudges",
		Value: json.RawMessage(`"hydration"`), Observed: map[string]uint64{"watch": 3}}
	mustApply(t, d, rm)
	if got := countTombstones(d); got != 1 {
		t.Fatalf("after a remove overtook its add: got %d tombstones, want 1", got)
	}
	mustApply(t, d, watch.op(t0, KindAdd, "enabled_nudges", "move_break", nil)) // watch:2
	if got := countTombstones(d); got != 1 {
		t.Fatal("the tombstone went before its add arrived")
	}
	mustApply(t, d, watch.op(t0, KindAdd, "enabled_nudges", "hydration", nil)) // watch:3: cancelled
	if got := countTombstones(d); got != 0 {
		t.Fatal("the tombstone outlived its add")
	}
	if got, want := fmt.Sprint(d.View()["enabled_nudges"]), "[bedtime move_break]"; got != want {
		t.Fatalf("enabled_nudges: got %s, want %s", got, want)
	}
	if got := d.Observed("enabled_nudges", "hydration"); got != nil {
		t.Fatalf("Observed of a non-member: got %v, want nil", got)
	}
	// Churn: adding and removing the same element many times leaves nothing behind.
	phone := &author{device: "phone", clock: NewHLC("phone", 0), seq: 1}
	for range 200 {
		mustApply(t, d, phone.op(t0, KindAdd, "favourite_activities", "Yoga", nil))
		obs := d.Observed("favourite_activities", "Yoga")
		mustApply(t, d, phone.op(t0, KindRemove, "favourite_activities", "Yoga", obs))
	}
	if len(d.sets[1]) != 0 {
		t.Fatalf("after add/remove churn: got entries %v, want none", d.sets[1])
	}
}

// TestCounters: increments from several devices add up; a counter keeps RetainDays days,
// ending with the latest; an increment of an older day is accepted and forgotten.
func TestCounters(t *testing.T) {
	d := New()
	phone, watch := newAuthor("phone"), newAuthor("watch")
	mustApply(t, d, phone.op(t0, KindIncr, "water_glasses.2026-11-29", 1, nil))
	mustApply(t, d, watch.op(t0, KindIncr, "water_glasses.2026-11-29", 1, nil))
	mustApply(t, d, watch.op(t0, KindIncr, "water_glasses.2026-11-29", -1, nil))
	mustApply(t, d, phone.op(t0, KindIncr, "water_glasses.2026-11-29", 3, nil))
	if got := d.View()["water_glasses"].(map[string]int64)["2026-11-29"]; got != 4 {
		t.Fatalf("2026-11-29: got %d, want 4", got)
	}
	mustApply(t, d, watch.op(t0.AddDate(0, 0, 1), KindIncr, "water_glasses.2026-11-30", 2, nil))
	later := t0.AddDate(0, 0, RetainDays) // 2026-12-30: 2026-11-30 is the oldest day kept
	mustApply(t, d, phone.op(later, KindIncr, "water_glasses.2026-12-30", 2, nil))
	want := encode(t, d)
	if got := viewJSON(t, d); !strings.Contains(got, `"water_glasses":{"2026-11-30":2,"2026-12-30":2}`) {
		t.Fatalf("View: got %s, want only 2026-11-30 and 2026-12-30", got)
	}
	old := watch.op(t0.AddDate(0, 0, 6), KindIncr, "water_glasses.2026-11-29", 1, nil)
	if applied, err := d.Apply(old); !applied || err != nil {
		t.Fatalf("Apply(incr of an expired day): got %v, %v, want true, nil", applied, err)
	}
	if d.Seen("watch") != 4 || !strings.Contains(viewJSON(t, d), `"water_glasses":{"2026-11-30":2,"2026-12-30":2}`) {
		t.Fatalf("incr of an expired day: got %s, Seen(watch)=%d, want the counters unchanged and Seen 4", viewJSON(t, d), d.Seen("watch"))
	}
	if bytes.Equal(encode(t, d), want) {
		t.Fatal("an applied op was not remembered")
	}
}

// TestLimits: every limit refuses with too_large and leaves the document as it was.
func TestLimits(t *testing.T) {
	refuse := func(t *testing.T, d *Document, op Op) {
		t.Helper()
		before := encode(t, d)
		applied, err := d.Apply(op)
		if err == nil || codeOf(t, err) != pulsebase.ETOOLARGE || applied {
			t.Fatalf("Apply: got %v, %v, want code %s", applied, err, pulsebase.ETOOLARGE)
		}
		if !bytes.Equal(before, encode(t, d)) {
			t.Fatal("a refused op changed the document")
		}
	}
	t.Run("favourites", func(t *testing.T) {
		d := New()
		a := newAuthor("phone")
		for i := range MaxFavourites {
			mustApply(t, d, a.op(t0, KindAdd, "favourite_activities", fmt.Sprintf("Activity %d", i), nil))
		}
		mustApply(t, d, a.op(t0, KindAdd, "favourite_activities", "Activity 0", nil)) // not a new member
		refuse(t, d, a.op(t0, KindAdd, "favourite_activities", "One too many", nil))
		// The state join is bounded too.
		other := New()
		mustApply(t, other, newAuthor("watch").op(t0, KindAdd, "favourite_activities", "Another", nil))
		before := encode(t, d)
		if err := d.Merge(other); err == nil || codeOf(t, err) != pulsebase.ETOOLARGE {
			t.Fatalf("Merge: got %v, want code %s", err, pulsebase.ETOOLARGE)
		}
		if !bytes.Equal(before, encode(t, d)) {
			t.Fatal("a refused Merge changed the document")
		}
	})
	t.Run("devices", func(t *testing.T) {
		d := New()
		for i := range MaxDevices {
			mustApply(t, d, newAuthor(fmt.Sprintf("device-%d", i)).op(t0, KindIncr, "water_glasses.2026-11-29", 1, nil))
		}
		refuse(t, d, newAuthor("one-too-many").op(t0, KindIncr, "water_glasses.2026-11-29", 1, nil))
		refuse(t, d, (&author{device: "device-0", clock: NewHLC("device-0", 0), seq: 1}).op(t0, KindRemove, "enabled_nudges", "bedtime", map[string]uint64{"unknown": 1}))
	})
	t.Run("tombstones", func(t *testing.T) {
		d := New()
		a := newAuthor("phone")
		for i := range MaxTombstones {
			mustApply(t, d, a.op(t0, KindRemove, "favourite_activities", fmt.Sprintf("A%d", i), map[string]uint64{"watch": 5}))
		}
		refuse(t, d, a.op(t0, KindRemove, "favourite_activities", "One too many", map[string]uint64{"watch": 5}))
	})
	t.Run("op size", func(t *testing.T) {
		observed := map[string]uint64{}
		for i := range MaxDevices {
			observed[fmt.Sprintf("%s-%02d", strings.Repeat("d", 60), i)] = MaxSeq
		}
		refuse(t, New(), newAuthor("phone").op(t0, KindRemove, "favourite_activities", "Yoga", observed))
		// Short before encoding, long after: each '<' of a device id encodes as \u003c.
		escaped := map[string]uint64{}
		for i := range 40 {
			escaped[fmt.Sprintf("%s%02d", strings.Repeat("<", 60), i)] = 1
		}
		refuse(t, New(), newAuthor("phone").op(t0, KindRemove, "favourite_activities", "Yoga", escaped))
		refuse(t, New(), newAuthor("phone").op(t0, KindSet, "goals.steps", json.RawMessage(strings.Repeat(" ", MaxOpSize)+"1"), nil))
		big := []byte(`{"id":"phone:1","ts":{"wall":1795939200000,"logical":0,"node":"phone"},"kind":"set","path":"goals.steps","value":1` + strings.Repeat(" ", MaxOpSize) + `}`)
		if _, err := DecodeOp(big); err == nil || codeOf(t, err) != pulsebase.ETOOLARGE {
			t.Fatalf("DecodeOp(%d bytes): got %v, want code %s", len(big), err, pulsebase.ETOOLARGE)
		}
	})
	t.Run("counter", func(t *testing.T) {
		d := New()
		mustApply(t, d, newAuthor("phone").op(t0, KindIncr, "water_glasses.2026-11-29", 1, nil))
		d.days[dayOf(t0.UnixMilli())]["phone"] = pn{p: MaxCount}
		refuse(t, d, (&author{device: "phone", clock: NewHLC("phone", 0), seq: 1}).op(t0, KindIncr, "water_glasses.2026-11-29", 1, nil))
	})
}

// TestDecodeOp: the wire shape, and what is not an op.
func TestDecodeOp(t *testing.T) {
	good := `{"id":"watch-1:42","ts":{"wall":1795939200000,"logical":3,"node":"watch-1"},"kind":"set","path":"goals.steps","value":8000}`
	op, err := DecodeOp([]byte(good))
	if err != nil {
		t.Fatalf("DecodeOp: %v", err)
	}
	want := Op{ID: "watch-1:42", TS: Timestamp{1795939200000, 3, "watch-1"}, Kind: KindSet, Path: "goals.steps", Value: json.RawMessage("8000")}
	if fmt.Sprint(op) != fmt.Sprint(want) {
		t.Fatalf("DecodeOp: got %+v, want %+v", op, want)
	}
	if b, _ := json.Marshal(op); string(b) != good {
		t.Fatalf("encoding the op: got %s, want %s", b, good)
	}
	rm := `{"id":"phone:9","ts":{"wall":1795939200000,"logical":0,"node":"phone"},"kind":"remove","path":"enabled_nudges","value":"bedtime","observed":{"phone":3,"watch-1":40}}`
	if _, err := DecodeOp([]byte(rm)); err != nil {
		t.Fatalf("DecodeOp(remove): %v", err)
	}
	ts := `"ts":{"wall":1795939200000,"logical":0,"node":"phone"}`
	clear, err := DecodeOp([]byte(`{"id":"phone:1",` + ts + `,"kind":"set","path":"quiet_hours","value":null}`))
	if err != nil || string(clear.Value) != "null" {
		t.Fatalf("DecodeOp(value null): got %q, %v, want null", clear.Value, err)
	}
	tests := []struct {
		name, json, code string
	}{
		{"not JSON", `{"id":`, CodeInvalidOp},
		{"an array", `[]`, CodeInvalidOp},
		{"null", `null`, CodeInvalidOp},
		{"unknown member", `{"id":"phone:1",` + ts + `,"kind":"set","path":"units","value":"metric","extra":1}`, CodeInvalidOp},
		{"trailing data", `{"id":"phone:1",` + ts + `,"kind":"set","path":"units","value":"metric"} {}`, CodeInvalidOp},
		{"no value", `{"id":"phone:1",` + ts + `,"kind":"set","path":"units"}`, CodeInvalidOp},
		{"observed on an add", `{"id":"phone:1",` + ts + `,"kind":"add","path":"enabled_nudges","value":"bedtime","observed":{"phone":1}}`, CodeInvalidOp},
		{"remove without observed", `{"id":"phone:2",` + ts + `,"kind":"remove","path":"enabled_nudges","value":"bedtime"}`, CodeInvalidOp},
		{"observed seq 0", `{"id":"phone:2",` + ts + `,"kind":"remove","path":"enabled_nudges","value":"bedtime","observed":{"watch":0}}`, CodeInvalidOp},
		{"observed seq too large", `{"id":"phone:2",` + ts + `,"kind":"remove","path":"enabled_nudges","value":"bedtime","observed":{"watch":9007199254740992}}`, CodeInvalidOp},
		{"observed negative", `{"id":"phone:2",` + ts + `,"kind":"remove","path":"enabled_nudges","value":"bedtime","observed":{"watch":-1}}`, CodeInvalidOp},
		{"observed own future", `{"id":"phone:2",` + ts + `,"kind":"remove","path":"enabled_nudges","value":"bedtime","observed":{"phone":2}}`, CodeInvalidOp},
		{"observed bad device", `{"id":"phone:2",` + ts + `,"kind":"remove","path":"enabled_nudges","value":"bedtime","observed":{"a b":1}}`, CodeInvalidOp},
		{"node is not the id's device", `{"id":"watch:1",` + ts + `,"kind":"set","path":"units","value":"metric"}`, CodeInvalidOp},
		{"wall before 2020", `{"id":"phone:1","ts":{"wall":1000,"logical":0,"node":"phone"},"kind":"set","path":"units","value":"metric"}`, CodeInvalidOp},
		{"wall in seconds", `{"id":"phone:1","ts":{"wall":1795939200,"logical":0,"node":"phone"},"kind":"set","path":"units","value":"metric"}`, CodeInvalidOp},
		{"fractional wall", `{"id":"phone:1","ts":{"wall":1795939200000.5,"logical":0,"node":"phone"},"kind":"set","path":"units","value":"metric"}`, CodeInvalidOp},
		{"logical too large", `{"id":"phone:1","ts":{"wall":1795939200000,"logical":4294967296,"node":"phone"},"kind":"set","path":"units","value":"metric"}`, CodeInvalidOp},
		{"kind upper case", `{"id":"phone:1",` + ts + `,"kind":"SET","path":"units","value":"metric"}`, CodeInvalidOp},
		{"unknown path", `{"id":"phone:1",` + ts + `,"kind":"set","path":"weight","value":70}`, CodeInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeOp([]byte(tt.json))
			if err == nil || codeOf(t, err) != tt.code {
				t.Fatalf("DecodeOp(%s): got %v, want code %s", tt.json, err, tt.code)
			}
		})
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		id     string
		device string
		seq    uint64
		ok     bool
	}{
		{"phone:1", "phone", 1, true},
		{"watch-1:42", "watch-1", 42, true},
		{"a.b_c~d@e:9007199254740991", "a.b_c~d@e", MaxSeq, true},
		{strings.Repeat("x", MaxDeviceLen) + ":1", strings.Repeat("x", MaxDeviceLen), 1, true},
		{strings.Repeat("x", MaxDeviceLen+1) + ":1", "", 0, false},
		{"phone:9007199254740992", "", 0, false},
		{"phone:0", "", 0, false},
		{"phone:01", "", 0, false},
		{"phone:-1", "", 0, false},
		{"phone:+1", "", 0, false},
		{"phone:1.0", "", 0, false},
		{"phone:", "", 0, false},
		{":1", "", 0, false},
		{"phone", "", 0, false},
		{"a:b:1", "", 0, false},
		{"my phone:1", "", 0, false},
		{"phoné:1", "", 0, false},
		{"phone:3f2504e0-4f89-11d3-9a0c-0305e82c3301", "", 0, false}, // uuids cannot be remembered in bounded space
	}
	for _, tt := range tests {
		device, seq, ok := parseID(tt.id)
		if device != tt.device || seq != tt.seq || ok != tt.ok {
			t.Errorf("parseID(%q): got %q, %d, %v, want %q, %d, %v", tt.id, device, seq, ok, tt.device, tt.seq, tt.ok)
		}
	}
}

// TestCheckIncoming: the server refuses a remove naming another device's add it has not
// seen, and takes one naming the remover's own earlier ops or adds it has; it refuses a
// seq that jumps far past the device's last.
func TestCheckIncoming(t *testing.T) {
	d := New()
	watch := newAuthor("watch")
	mustApply(t, d, watch.op(t0, KindAdd, "enabled_nudges", "bedtime", nil))
	phone := &author{device: "phone", clock: NewHLC("phone", 0), seq: 5}
	ok := phone.op(t0, KindRemove, "enabled_nudges", "bedtime", map[string]uint64{"watch": 1, "phone": 4})
	if err := d.CheckIncoming(ok); err != nil {
		t.Fatalf("CheckIncoming(a remove of what the server has seen): %v", err)
	}
	bad := phone.op(t0, KindRemove, "enabled_nudges", "bedtime", map[string]uint64{"watch": 2})
	if err := d.CheckIncoming(bad); err == nil || codeOf(t, err) != CodeInvalidOp {
		t.Fatalf("CheckIncoming(a remove of an add the server has not seen): got %v, want code %s", err, CodeInvalidOp)
	}
	if err := d.CheckIncoming(phone.op(t0, KindSet, "units", "metric", nil)); err != nil {
		t.Fatalf("CheckIncoming(set): %v", err)
	}
	jump := &author{device: "watch", clock: NewHLC("watch", 0), seq: 1 + MaxSeqJump}
	if err := d.CheckIncoming(jump.op(t0, KindSet, "units", "metric", nil)); err == nil || codeOf(t, err) != CodeInvalidOp {
		t.Fatalf("CheckIncoming(a seq %d past the last): got %v, want code %s", MaxSeqJump+1, err, CodeInvalidOp)
	}
	jump.seq = MaxSeqJump
	if err := d.CheckIncoming(jump.op(t0, KindSet, "units", "metric", nil)); err != nil {
		t.Fatalf("CheckIncoming(a seq %d past the last): %v", MaxSeqJump, err)
	}
}
