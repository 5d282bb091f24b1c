package obs

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/inventory/inventorytest"
)

func TestPoolCollector(t *testing.T) {
	t.Parallel()
	store := inventorytest.Open(t, inventorytest.NewDatabase(t), &inventory.Options{MaxConns: 3})
	if err := store.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewPoolCollector(store)); err != nil {
		t.Fatal(err)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("series: got %d, want 6 (conns idle and acquired, max, acquires, empty acquires, acquire seconds)", n)
	}
	if got, err := testutil.GatherAndCount(reg, "flashsale_db_pool_max_conns"); err != nil || got != 1 {
		t.Errorf("flashsale_db_pool_max_conns: got %d series (%v), want 1", got, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "flashsale_db_pool_max_conns" && mf.GetMetric()[0].GetGauge().GetValue() != 3 {
			t.Errorf("flashsale_db_pool_max_conns: got %v, want 3", mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
}
