package api_test

import (
	"os"
	"testing"

	"github.com/gin-gonic/gin"
)

func TestMain(m *testing.M) {
	// gin picks debug mode at init, before the test flags exist, and then
	// prints every route and redirect.
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}
