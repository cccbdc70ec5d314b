package bench

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

const chartInput = `{"machine":{"cpu":"Test CPU","cores":2},"settings":{"peers":["direct","haproxy","sluice"],"runs":3},
"medians":[
 {"workload":"tput1-up","label":"tput 1 stream up, Gbit/s","lower_is_better":false,"values":{"direct":20,"haproxy":10,"sluice":15}},
 {"workload":"rr64","label":"rr 64 workers, conn/s","lower_is_better":false,"values":{"direct":6000,"haproxy":4000,"sluice":null}},
 {"workload":"rr64","label":"rr 64 workers, p99 µs","lower_is_better":true,"values":{"direct":1,"haproxy":2,"sluice":3}}
]}`

func TestChart(t *testing.T) {
	var out strings.Builder
	if err := Chart(&out, strings.NewReader(chartInput)); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML, one bar per peer and rate figure with a value (5),
	// the p99 figure left out, and the missing value said.
	dec := xml.NewDecoder(strings.NewReader(out.String()))
	bars, widths := 0, map[string]bool{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v\n%s", err, out.String())
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			for _, a := range se.Attr {
				if a.Name.Local == "class" && a.Value == "bar" {
					bars++
				}
				if a.Name.Local == "width" {
					widths[a.Value] = true
				}
			}
		}
	}
	if bars != 5 {
		t.Errorf("%d bars, want 5", bars)
	}
	if !widths["480.0"] || !widths["240.0"] || !widths["360.0"] {
		t.Errorf("bar widths %v: want the largest value at full width (480) and the others to scale", widths)
	}
	if strings.Contains(out.String(), "p99") || !strings.Contains(out.String(), "no result") {
		t.Errorf("chart should skip lower-is-better figures and mark missing values:\n%s", out.String())
	}
}

func TestChartBadInput(t *testing.T) {
	for _, in := range []string{"", "{", `{"settings":{"peers":[]}}`, `{"settings":{"peers":["a"]},"medians":[]}`} {
		if err := Chart(io.Discard, strings.NewReader(in)); err == nil {
			t.Errorf("Chart(%q) = nil, want an error", in)
		}
	}
}
