package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"slices"
	"strconv"
	"strings"
)

// chartFigures are the figures of a peers.sh results file that Chart draws:
// the rates, where a longer bar is better.
var chartFigures = []string{"tput1-up", "tput1-down", "tput8-up", "tput8-down", "rr64"}

// chartResults is the part of peers.sh's results.json that Chart reads.
type chartResults struct {
	Machine struct {
		CPU   string `json:"cpu"`
		Cores int    `json:"cores"`
	} `json:"machine"`
	Settings struct {
		Peers []string `json:"peers"`
		Runs  int      `json:"runs"`
	} `json:"settings"`
	Medians []struct {
		Workload      string              `json:"workload"`
		Label         string              `json:"label"`
		LowerIsBetter bool                `json:"lower_is_better"`
		Values        map[string]*float64 `json:"values"`
	} `json:"medians"`
}

// Chart reads the results.json that bench/peers.sh writes and draws an SVG
// bar chart of throughput and connection rate per peer, one panel per
// figure, sluice's bars highlighted.
func Chart(w io.Writer, r io.Reader) error {
	var res chartResults
	if err := json.NewDecoder(r).Decode(&res); err != nil {
		return fmt.Errorf("bench: chart: reading results: %w", err)
	}
	peers := res.Settings.Peers
	if len(peers) == 0 {
		return fmt.Errorf("bench: chart: results name no peers")
	}
	const width, labelW, barH, gap = 720, 150, 16, 4
	panelH := 28 + len(peers)*(barH+gap)
	var b strings.Builder
	y := 40
	for _, m := range res.Medians {
		if m.LowerIsBetter || !slices.Contains(chartFigures, m.Workload) {
			continue
		}
		chartPanel(&b, m.Label, peers, m.Values, y, width, labelW, barH, gap)
		y += panelH
	}
	if y == 40 {
		return fmt.Errorf("bench: chart: results hold none of the figures %v", chartFigures)
	}
	title := fmt.Sprintf("sluice beside its peers: median of %d runs, %d cores (%s), loopback",
		res.Settings.Runs, res.Machine.Cores, res.Machine.CPU)
	_, err := fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">
<rect width="100%%" height="100%%" fill="white"/>
<text x="10" y="22" font-size="14" font-weight="bold">%s</text>
%s</svg>
`, width, y+10, html.EscapeString(title), b.String())
	return err
}

// chartPanel writes one figure's bars, scaled to its largest value.
func chartPanel(b *strings.Builder, label string, peers []string, values map[string]*float64, y, width, labelW, barH, gap int) {
	top := 0.0
	for _, p := range peers {
		if v := values[p]; v != nil && *v > top {
			top = *v
		}
	}
	fmt.Fprintf(b, "<text x=\"10\" y=\"%d\" font-weight=\"bold\">%s</text>\n", y+12, html.EscapeString(label))
	y += 20
	maxBar := float64(width - labelW - 90)
	for _, p := range peers {
		fmt.Fprintf(b, "<text x=\"10\" y=\"%d\">%s</text>\n", y+barH-4, html.EscapeString(p))
		v := values[p]
		if v == nil {
			fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\" fill=\"#888\">no result</text>\n", labelW, y+barH-4)
			y += barH + gap
			continue
		}
		bar := 0.0
		if top > 0 {
			bar = *v / top * maxBar
		}
		fill := "#8aa4c8"
		if strings.HasPrefix(p, "sluice") {
			fill = "#d9622b"
		}
		fmt.Fprintf(b, "<rect class=\"bar\" x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n", labelW, y, bar, barH, fill)
		fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%d\">%s</text>\n", float64(labelW)+bar+6, y+barH-4, chartNumber(*v))
		y += barH + gap
	}
}

// chartNumber prints v with three significant digits, whole numbers from
// 100 up.
func chartNumber(v float64) string {
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}
