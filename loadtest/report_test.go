package loadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestReportJSONFieldNames pins the JSON field names scripts rely on.
func TestReportJSONFieldNames(t *testing.T) {
	rep := &Report{Violations: []Violation{{Code: CodeOversell, Message: "m"}}, Queue: QueueReport{Samples: []QueueSample{{}}}}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	keysOf := func(raw json.RawMessage) []string {
		var sub map[string]json.RawMessage
		if err := json.Unmarshal(raw, &sub); err != nil {
			t.Fatal(err)
		}
		return slices.Sorted(maps.Keys(sub))
	}
	firstOf := func(raw json.RawMessage) json.RawMessage {
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil || len(list) == 0 {
			t.Fatalf("not a non-empty list: %s", raw)
		}
		return list[0]
	}
	tests := []struct {
		name string
		got  []string
		want string
	}{
		{"report", slices.Sorted(maps.Keys(m)), "answered duplicates final_latency_ms max_send_lag_ms orders outcomes phases_seconds poll_status polls products queue rereads resends retries run_id schema sent settings settled settled_per_sec started_at submit_latency_by_status_ms submit_latency_ms submit_status submitted_per_sec totals transport_errors verified ok violation_counts violations"},
		{"outcomes", keysOf(m["outcomes"]), "failed limit_exceeded rejected sold_out sold_out_fast_path succeeded unsent unsettled"},
		{"latency", keysOf(m["submit_latency_ms"]), "count max mean p50 p95 p99"},
		{"phases", keysOf(m["phases_seconds"]), "create settle submit total verify"},
		{"queue", keysOf(m["queue"]), "available max_depth sample_count samples"},
		{"queue sample", keysOf(firstOf(keysRaw(t, m["queue"], "samples"))), "active archived at_seconds completed depth pending retry scheduled size"},
		{"totals", keysOf(m["totals"]), "sold stock stocked succeeded_units"},
		{"violation", keysOf(firstOf(m["violations"])), "code message"},
		{"settings", keysOf(m["settings"]), "apis concurrency dup_rate hot max_quantity max_retries orders per_user_limit poll_wait_seconds products rate seed settle_concurrency stock timeout_seconds users"},
	}
	for _, tt := range tests {
		want := strings.Fields(tt.want)
		slices.Sort(want)
		if !slices.Equal(tt.got, want) {
			t.Errorf("%s JSON fields = %v, want %v", tt.name, tt.got, want)
		}
	}
}

func keysRaw(t *testing.T, raw json.RawMessage, key string) json.RawMessage {
	t.Helper()
	var sub map[string]json.RawMessage
	if err := json.Unmarshal(raw, &sub); err != nil {
		t.Fatal(err)
	}
	return sub[key]
}

func TestReportText(t *testing.T) {
	rep := &Report{RunID: "r1", Orders: 30, Verified: true, ViolationCounts: map[ViolationCode]int{}}
	for i := range 25 {
		rep.Violations = append(rep.Violations, Violation{Code: CodeOrderLost, Message: fmt.Sprintf("order o%d lost", i)})
		rep.ViolationCounts[CodeOrderLost]++
	}
	rep.Violations = append(rep.Violations, Violation{Code: CodeOversell, Message: "product p oversold"})
	rep.ViolationCounts[CodeOversell]++
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"loadtest r1: 30 orders", "latency ms", "submit→final", "queue depth: unavailable",
		"result: FAIL, 26 violation(s)", "order_lost (25):", "order o19 lost", "... and 5 more", "oversell (1):", "product p oversold"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "order o20 lost") {
		t.Errorf("text report lists more than %d violations of one code:\n%s", maxTextViolationsPerCode, out)
	}

	buf.Reset()
	rep = &Report{RunID: "r2", Verified: true, OK: true}
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "result: OK, no violations") {
		t.Errorf("clean text report lacks the OK line:\n%s", buf.String())
	}
}

// The stock line gives no figure for a product that was not read back
// (from a user review: an interrupted run printed "stocked 5000, sold 0,
// left 0", the 0s standing for products never read).
func TestReportTextStockOfProductsNotRead(t *testing.T) {
	for _, tc := range []struct {
		name     string
		products []ProductReport
		totals   Totals
		want     string
	}{
		{"none read", []ProductReport{{ID: "p0", Stocked: 5000}},
			Totals{Stocked: 5000, SucceededUnits: 2405},
			"stock: stocked 5000, sold and left unknown (no product read back), succeeded units 2405\n"},
		{"some read", []ProductReport{{ID: "p0", Stocked: 10, Stock: 4, Sold: 6, Read: true}, {ID: "p1", Stocked: 10}},
			Totals{Stocked: 20, Stock: 4, Sold: 6, SucceededUnits: 9},
			"stock: stocked 20, sold 6 and left 4 in the 1 of 2 products read back, succeeded units 9\n"},
		{"all read", []ProductReport{{ID: "p0", Stocked: 10, Stock: 4, Sold: 6, Read: true}},
			Totals{Stocked: 10, Stock: 4, Sold: 6, SucceededUnits: 6},
			"stock: stocked 10, sold 6, left 4, succeeded units 6\n"},
	} {
		rep := &Report{RunID: "r", Products: tc.products, Totals: tc.totals}
		var buf bytes.Buffer
		if err := rep.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(buf.String(), tc.want) {
			t.Errorf("%s: text report lacks %q:\n%s", tc.name, tc.want, buf.String())
		}
	}
}
