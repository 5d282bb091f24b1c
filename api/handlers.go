package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/flashsale/flashsale/inventory"
	"github.com/flashsale/flashsale/sale"
)

// productJSON is a product as the API shows it.
type productJSON struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Stock        int64  `json:"stock"`
	Sold         int64  `json:"sold"`
	PerUserLimit int    `json:"per_user_limit"`
}

func toProduct(p inventory.Product) productJSON {
	return productJSON{ID: p.ID, Name: p.Name, Stock: p.Stock, Sold: p.Sold, PerUserLimit: p.PerUserLimit}
}

type createProductRequest struct {
	ID           *string `json:"id"`
	Name         *string `json:"name"`
	Stock        *int64  `json:"stock"`
	PerUserLimit *int    `json:"per_user_limit"`
}

func (s *server) createProduct(c *gin.Context) {
	var req createProductRequest
	if !decodeJSON(c, &req) {
		return
	}
	if req.ID == nil || req.Name == nil || req.Stock == nil {
		abort(c, http.StatusBadRequest, "invalid_request", `fields "id", "name" and "stock" are required`)
		return
	}
	np := inventory.NewProduct{ID: *req.ID, Name: *req.Name, Stock: *req.Stock}
	if req.PerUserLimit != nil {
		np.PerUserLimit = *req.PerUserLimit
	}
	p, err := s.svc.CreateProduct(c.Request.Context(), np)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.log.InfoContext(c, "product created", "product_id", p.ID, "stock", p.Stock, "per_user_limit", p.PerUserLimit)
	c.Header("Location", "/v1/products/"+p.ID)
	c.JSON(http.StatusCreated, toProduct(p))
}

func (s *server) getProduct(c *gin.Context) {
	p, err := s.svc.Product(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, toProduct(p))
}

// listProducts pages through products by id: ?after=<id>&limit=<n> (≤1000).
func (s *server) listProducts(c *gin.Context) {
	limit := 100
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			abort(c, http.StatusBadRequest, "invalid_request", "limit must be an integer from 1 to 1000")
			return
		}
		limit = n
	}
	after := c.Query("after")
	if after != "" && !sale.ValidID(after) {
		abort(c, http.StatusBadRequest, "invalid_request", "after must be a product id")
		return
	}
	ps, err := s.svc.Products(c.Request.Context(), after, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]productJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, toProduct(p))
	}
	c.JSON(http.StatusOK, gin.H{"products": out})
}

type restockRequest struct {
	Quantity *int64 `json:"quantity"`
}

func (s *server) restock(c *gin.Context) {
	var req restockRequest
	if !decodeJSON(c, &req) {
		return
	}
	if req.Quantity == nil {
		abort(c, http.StatusBadRequest, "invalid_request", `field "quantity" is required`)
		return
	}
	key, ok := idempotencyKey(c)
	if !ok {
		return
	}
	p, replay, err := s.svc.Restock(c.Request.Context(), c.Param("id"), *req.Quantity, key)
	if err != nil {
		s.fail(c, err)
		return
	}
	if replay {
		c.Header("Idempotent-Replayed", "true")
	} else {
		s.log.InfoContext(c, "product restocked", "product_id", p.ID, "quantity", *req.Quantity, "stock", p.Stock)
	}
	c.JSON(http.StatusOK, toProduct(p))
}

type placeOrderRequest struct {
	ProductID *string `json:"product_id"`
	UserID    *string `json:"user_id"`
	Quantity  *int    `json:"quantity"`
}

// idempotencyKey returns the request's Idempotency-Key ("" when none was
// sent). A key sent empty (net/http trims one of only spaces to empty) is
// outside the key's limits, 1-255 characters: it answers 400 and returns
// false, rather than read as no key and make every retry a new order; so
// do several Idempotency-Key lines.
func idempotencyKey(c *gin.Context) (string, bool) {
	v, sent := c.Request.Header["Idempotency-Key"] // canonical name: no allocation
	if !sent {
		return "", true
	}
	switch {
	case len(v) == 0 || v[0] == "":
		abort(c, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("Idempotency-Key must be 1-%d printable ASCII characters", sale.MaxIdempotencyKeyLength))
		return "", false
	case len(v) > 1:
		// Which one names the order? Taking the first (as Header.Get
		// does) could join a retry to another order, or a proxy's added
		// line to the client's: refuse, as for any malformed key.
		abort(c, http.StatusBadRequest, "invalid_request", "send one Idempotency-Key header, not several")
		return "", false
	}
	return v[0], true
}

type placedJSON struct {
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
}

func (s *server) placeOrder(c *gin.Context) {
	var req placeOrderRequest
	if !decodeJSON(c, &req) {
		return
	}
	if req.ProductID == nil || req.UserID == nil || req.Quantity == nil {
		abort(c, http.StatusBadRequest, "invalid_request", `fields "product_id", "user_id" and "quantity" are required`)
		return
	}
	key, ok := idempotencyKey(c)
	if !ok {
		return
	}
	placed, err := s.svc.PlaceOrder(c.Request.Context(), sale.PlaceOrderRequest{
		ProductID: *req.ProductID, UserID: *req.UserID, Quantity: *req.Quantity,
		IdempotencyKey: key,
	})
	if err != nil {
		s.fail(c, err)
		return
	}
	s.log.DebugContext(c, "order accepted", "order_id", placed.OrderID, "product_id", *req.ProductID, "replay", placed.Replay)
	c.Header("Location", "/v1/orders/"+placed.OrderID)
	c.JSON(http.StatusAccepted, placedJSON{OrderID: placed.OrderID, Status: string(placed.Status)})
}

type orderJSON struct {
	OrderID   string    `json:"order_id"`
	ProductID string    `json:"product_id"`
	UserID    string    `json:"user_id"`
	Quantity  int       `json:"quantity"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// getOrder answers an order's state; ?wait=<duration> (e.g. 10s, capped at
// Config.MaxWait) holds the request until the order is final or the wait ends.
func (s *server) getOrder(c *gin.Context) {
	var wait time.Duration
	if v := c.Query("wait"); v != "" {
		d, ok := parseWait(v, s.cfg.MaxWait)
		if !ok {
			abort(c, http.StatusBadRequest, "invalid_request",
				fmt.Sprintf("wait must be a duration such as 10s, or whole seconds, not negative (a longer one is cut to %s)", s.cfg.MaxWait))
			return
		}
		wait = d
	}
	var v sale.OrderView
	var err error
	if wait > 0 {
		v, err = s.svc.WaitOrder(c.Request.Context(), c.Param("id"), wait)
	} else {
		v, err = s.svc.Order(c.Request.Context(), c.Param("id"))
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, orderJSON{
		OrderID: v.ID, ProductID: v.ProductID, UserID: v.UserID, Quantity: v.Quantity,
		Status: string(v.Status), Reason: v.Reason, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt,
	})
}

func (s *server) queueStats(c *gin.Context) {
	st, err := s.svc.QueueStats(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}
