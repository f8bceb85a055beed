// Command oracle loads a llama-swap config with llama-swap's own loader and prints what it
// means as JSON: {"error": "..."} when llama-swap refuses it, else the models (argv after
// macros and ports, proxy, checkEndpoint, env, aliases, ttl, filters...), the groups with the
// implicit default group, the router and the preload list.
//
// It is built inside a checkout of llama-swap (it imports its internal/config package), see
// scripts/llama_swap_corpus.py. It is a tool for regenerating the corpus expectations of
// tests/migrate/test_corpus.py; nothing in llamasup runs it.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/mostlygeek/llama-swap/internal/config"
)

type model struct {
	Argv          []string                  `json:"argv"`
	ArgvError     string                    `json:"argv_error,omitempty"`
	CmdStop       string                    `json:"cmdStop,omitempty"`
	Proxy         string                    `json:"proxy"`
	CheckEndpoint string                    `json:"checkEndpoint"`
	Env           []string                  `json:"env"`
	Aliases       []string                  `json:"aliases"`
	TTL           int                       `json:"ttl"`
	Unlisted      bool                      `json:"unlisted"`
	UseModelName  string                    `json:"useModelName,omitempty"`
	Concurrency   int                       `json:"concurrencyLimit"`
	SetParams     map[string]any            `json:"setParams,omitempty"`
	StripParams   []string                  `json:"stripParams,omitempty"`
	SetParamsByID map[string]map[string]any `json:"setParamsByID,omitempty"`
}

func main() {
	cfg, err := config.LoadConfig(os.Args[1])
	out := map[string]any{}
	if err != nil {
		out["error"] = err.Error()
	} else {
		models := map[string]model{}
		for id, m := range cfg.Models {
			argv, aerr := m.SanitizedCommand()
			mm := model{Argv: argv, CmdStop: m.CmdStop, Proxy: m.Proxy,
				CheckEndpoint: m.CheckEndpoint, Env: m.Env, Aliases: m.Aliases,
				TTL: m.UnloadAfter, Unlisted: m.Unlisted, UseModelName: m.UseModelName,
				Concurrency: m.ConcurrencyLimit}
			if aerr != nil {
				mm.ArgvError = aerr.Error()
			}
			mm.SetParams, _ = m.Filters.SanitizedSetParams()
			mm.StripParams, _ = m.Filters.SanitizedStripParams()
			for key := range m.Filters.SetParamsByID {
				params, _ := m.Filters.SanitizedSetParamsByID(key)
				if mm.SetParamsByID == nil {
					mm.SetParamsByID = map[string]map[string]any{}
				}
				mm.SetParamsByID[key] = params
			}
			models[id] = mm
		}
		out["models"] = models
		out["groups"] = cfg.Routing.Router.Settings.Groups
		out["router"] = cfg.Routing.Router.Use
		out["preload"] = cfg.Hooks.OnStartup.Preload
		out["healthCheckTimeout"] = cfg.HealthCheckTimeout
	}
	encoded, jerr := json.Marshal(out)
	if jerr != nil {
		fmt.Fprintln(os.Stderr, jerr)
		os.Exit(2)
	}
	fmt.Println(string(encoded))
}
