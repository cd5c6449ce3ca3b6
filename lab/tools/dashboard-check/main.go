// Command dashboard-check decodes Grafana dashboard JSON files strictly with the dashboard
// types of the Grafana Foundation SDK (Apache-2.0; generated from Grafana's own schemas): an
// unknown or mistyped field, a missing required one, or options that do not fit the panel's
// plugin fail. It also refuses what the SDK would decode leniently: a panel type it has no
// schema for, and a panel or query whose data source is not Prometheus. Exit 1 names every
// error.
//
//	dashboard-check FILE.json...
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dashboard-check FILE.json...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, path := range os.Args[1:] {
		for _, err := range check(path) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func check(path string) []error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return []error{err}
	}
	var d dashboard.Dashboard
	errs := unwrap(d.UnmarshalJSONStrict(raw))
	if len(errs) > 0 {
		return errs
	}
	errs = unwrap(d.Validate())
	// The SDK's strict decoders return an empty cog.BuildErrors as an error, and the callers
	// of the panel and query decoders then drop what was decoded (the errors they report
	// above are real). So each panel and query is decoded here again, one by one.
	var top struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return append(errs, err)
	}
	var panels []json.RawMessage
	for _, p := range top.Panels {
		var row struct {
			Type   string            `json:"type"`
			Panels []json.RawMessage `json:"panels"`
		}
		if err := json.Unmarshal(p, &row); err != nil {
			errs = append(errs, err)
		} else if row.Type == "row" {
			panels = append(panels, row.Panels...)
		} else {
			panels = append(panels, p)
		}
	}
	if len(panels) == 0 {
		errs = append(errs, fmt.Errorf("no panels"))
	}
	for i, p := range panels {
		errs = append(errs, checkPanel(i, p)...)
	}
	return errs
}

func checkPanel(i int, raw json.RawMessage) []error {
	var panel dashboard.Panel
	errs := unwrap(panel.UnmarshalJSONStrict(raw))
	errs = append(errs, unwrap(panel.Validate())...)
	name := fmt.Sprintf("panel %d", i)
	if panel.Title != nil {
		name = fmt.Sprintf("panel %q", *panel.Title)
	}
	if _, ok := cog.ConfigForPanelcfgVariant(panel.Type); !ok {
		errs = append(errs, fmt.Errorf("%s: no schema for panel type %q", name, panel.Type))
	}
	if !isPrometheus(panel.Datasource) {
		errs = append(errs, fmt.Errorf("%s: the data source is not Prometheus", name))
	}
	var targets struct {
		Targets []json.RawMessage `json:"targets"`
	}
	if err := json.Unmarshal(raw, &targets); err != nil {
		return append(errs, err)
	}
	for j, t := range targets.Targets {
		var query prometheus.Dataquery
		for _, err := range unwrap(query.UnmarshalJSONStrict(t)) {
			errs = append(errs, fmt.Errorf("%s: targets[%d]: %w", name, j, err))
		}
		if !isPrometheus(query.Datasource) {
			errs = append(errs, fmt.Errorf("%s: targets[%d]: the data source is not Prometheus", name, j))
		}
	}
	return errs
}

func isPrometheus(ds *common.DataSourceRef) bool {
	return ds != nil && ds.Type != nil && *ds.Type == "prometheus"
}

// unwrap lists the errors of a cog.BuildErrors (none for an empty one).
func unwrap(err error) []error {
	if err == nil {
		return nil
	}
	list, ok := err.(cog.BuildErrors)
	if !ok {
		return []error{err}
	}
	var errs []error
	for _, e := range list {
		errs = append(errs, e)
	}
	return errs
}
