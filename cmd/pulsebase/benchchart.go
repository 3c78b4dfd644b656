package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/pulsebase/pulsebase/internal/loadgen"
)

const benchChartSynopsis = `Usage: pulsebase bench chart --out FILE.svg [--title TEXT] REPORT.json…

Draws accepted samples/s against p99 latency, ingest and ack → delivery, from the
--json reports of 'pulsebase bench': one point per run (broker baselines left out), a
line per transport and latency, on a log latency scale. The steps of a --find-max report
make a curve, and its --max-p99 is drawn across. The format follows --out's extension:
.svg, .png or .pdf.`

// benchChartConfig is every setting of `pulsebase bench chart`.
type benchChartConfig struct {
	Out   string
	Title string
	Files []string
}

func runBenchChart(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg benchChartConfig
	fs := flag.NewFlagSet("bench chart", flag.ContinueOnError)
	fs.StringVar(&cfg.Out, "out", "", "the chart `FILE` to write (.svg, .png or .pdf)")
	fs.StringVar(&cfg.Title, "title", "Pulsebase: throughput against p99 latency", "the chart's title")
	fs.Usage = usageFunc(fs, benchChartSynopsis)
	fs.SetOutput(stderr)
	// The reports are arguments, which parseFlags refuses: parse here, then fill the
	// flags not given from their environment twins as it does.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return &usageError{err.Error()}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" && !set[f.Name] && envErr == nil {
			envErr = fs.Set(f.Name, v)
		}
	})
	if envErr != nil {
		return usageErr(fs, envErr.Error())
	}
	cfg.Files = fs.Args()
	switch ext := strings.ToLower(filepath.Ext(cfg.Out)); {
	case cfg.Out == "":
		return usageErr(fs, "--out FILE is required")
	case ext != ".svg" && ext != ".png" && ext != ".pdf":
		return usageErr(fs, fmt.Sprintf("--out %s: want a .svg, .png or .pdf file", cfg.Out))
	case len(cfg.Files) == 0:
		return usageErr(fs, "name at least one report (bench --json FILE)")
	}
	var sums []*loadgen.Summary
	for _, f := range cfg.Files {
		s, err := readSummary(f)
		if err != nil {
			return err
		}
		sums = append(sums, s)
	}
	p, points, err := benchChart(cfg.Title, sums)
	if err != nil {
		return err
	}
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, cfg.Out); err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s: %d points from %d reports\n", cfg.Out, points, len(sums))
	return nil
}

func readSummary(path string) (*loadgen.Summary, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s loadgen.Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: not a bench report: %w", path, err)
	}
	return &s, nil
}

// minChartMS is the smallest latency drawn: a log scale has no 0.
const minChartMS = 0.01

// benchChart builds the chart of the runs of sums and returns it with the number of
// points it holds.
func benchChart(title string, sums []*loadgen.Summary) (*plot.Plot, int, error) {
	type series struct {
		name string
		xys  plotter.XYs
	}
	var all []*series
	add := func(name string, x, y float64) {
		i := slices.IndexFunc(all, func(s *series) bool { return s.name == name })
		if i < 0 {
			all = append(all, &series{name: name})
			i = len(all) - 1
		}
		all[i].xys = append(all[i].xys, plotter.XY{X: x, Y: math.Max(y, minChartMS)})
	}
	maxP99 := 0.0
	points := 0
	for _, s := range sums {
		if s.FindMax != nil && maxP99 == 0 {
			maxP99 = s.FindMax.Criteria.MaxP99
		}
		for _, r := range s.Runs {
			if r.Target == "broker" || r.Latency.Count == 0 {
				continue
			}
			add(r.Target+" ingest p99", r.AcceptedPerSec, r.Latency.P99)
			points++
			if r.Sync != nil && r.Sync.AckToDelivery.Count > 0 {
				add(r.Target+" ack→delivery p99", r.AcceptedPerSec, r.Sync.AckToDelivery.P99)
				points++
			}
		}
	}
	if points == 0 {
		return nil, 0, errors.New("the reports hold no Pulsebase run to draw")
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "accepted samples/s"
	p.Y.Label.Text = "p99 latency (ms, log scale)"
	p.X.Min = 0
	p.X.Tick.Marker = thousandsTicks{}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	for i, s := range all {
		slices.SortFunc(s.xys, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		l, sc, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return nil, 0, fmt.Errorf("chart %s: %w", s.name, err)
		}
		l.Color = plotutil.Color(i)
		sc.Color = plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		p.Add(l, sc)
		p.Legend.Add(s.name, l, sc)
	}
	if maxP99 > 0 {
		f := plotter.NewFunction(func(float64) float64 { return maxP99 })
		f.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		f.Color = plotutil.Color(len(all))
		p.Add(f)
		p.Legend.Add(fmt.Sprintf("--max-p99 %g ms", maxP99), f)
		// The line must be inside the range even when every point is far from it.
		p.Y.Min = math.Min(p.Y.Min, maxP99/2)
		p.Y.Max = math.Max(p.Y.Max, maxP99*2)
	}
	return p, points, nil
}

// logTicks are ticks for a log axis labelled at 1, 2 and 5 times powers of ten, with
// unlabelled ones at the other multiples (plot.LogTicks labels powers of ten only, too
// few for latencies within two decades).
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(min)); math.Pow(10, e) <= max; e++ {
		p := math.Pow(10, e)
		for m := 1; m < 10; m++ {
			v := float64(m) * p
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
				if v >= 1000 {
					t.Label = thousandsInt(v)
				}
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// thousandsTicks are the default ticks labelled with thousands separators.
type thousandsTicks struct{}

func (thousandsTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = thousandsInt(t.Value)
		}
	}
	return ticks
}
