package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// A browser cannot send a bearer header by itself, so the read-only admin
// pages (the dashboard's data and the queue monitor) also accept a session
// cookie, set by POST /login after the admin token was typed into a form.
//
// The cookie holds "<expiry unix seconds>.<HMAC-SHA256 keyed by the admin
// token over the expiry>": it never contains the token, any API process that
// knows the token can check it, it expires on its own, and changing the
// token invalidates every session. It is HttpOnly and SameSite=Strict (and
// Secure behind TLS), and it grants only GET access to /v1/dashboard and
// /monitoring/: every endpoint that changes something still needs the
// bearer header.
const (
	// SessionCookie is the name of the admin session cookie.
	SessionCookie = "flashsale_admin"
	// SessionTTL is how long an admin session lasts.
	SessionTTL = 12 * time.Hour
)

// sessionValue is the cookie value of a session that ends at exp.
func sessionValue(token string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("flashsale admin session v1\x00" + e))
	return e + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// validSession checks a cookie value in constant time: a MAC of the token
// over an expiry that has not passed (and is not further away than
// SessionTTL, which no session of ours is).
func validSession(token, value string, now time.Time) bool {
	e, _, ok := strings.Cut(value, ".")
	if !ok || token == "" {
		return false
	}
	n, err := strconv.ParseInt(e, 10, 64)
	if err != nil {
		return false
	}
	exp := time.Unix(n, 0)
	if !now.Before(exp) || exp.After(now.Add(SessionTTL+time.Minute)) {
		return false
	}
	return hmac.Equal([]byte(sessionValue(token, exp)), []byte(value))
}

// adminRead lets a request through with the admin bearer token or a valid
// admin session cookie (an Authorization header of another scheme, such as a
// proxy's Basic, leaves it to the cookie). Without either, a browser asking for a page is sent
// to the sign-in form; anything else gets 401.
func (s *server) adminRead(c *gin.Context) {
	if s.cfg.AdminToken == "" {
		abort(c, http.StatusUnauthorized, "unauthorized", "admin endpoints are disabled (no admin token configured)")
		return
	}
	// A wrong bearer token is refused even with a cookie. Another scheme
	// is no bearer token: a proxy in front asking for Basic makes the
	// browser send it with every request, and the cookie decides then.
	if scheme, _, _ := strings.Cut(c.GetHeader("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		s.admin(c)
		return
	}
	if v, err := c.Cookie(SessionCookie); err == nil && validSession(s.cfg.AdminToken, v, time.Now()) {
		c.Header("Cache-Control", "no-store")
		c.Next()
		return
	}
	if strings.Contains(c.GetHeader("Accept"), "text/html") {
		c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape(c.Request.URL.Path))
		c.Abort()
		return
	}
	c.Header("WWW-Authenticate", `Bearer realm="flashsale"`)
	abort(c, http.StatusUnauthorized, "unauthorized", "missing or wrong admin token")
}

//go:embed ui/login.html
var loginFS embed.FS

var loginPage = template.Must(template.ParseFS(loginFS, "ui/login.html"))

// safeNext keeps the redirect after sign-in on this site's admin pages:
// the dashboard, or a page of the monitor (a deep link such as
// /monitoring/queues/orders, which a signed-out admin was sent to sign in
// from), whose path is plain segments: no "..", no empty segment (which
// "//host" would be), nothing to escape.
func safeNext(next string) string {
	if rest, ok := strings.CutPrefix(next, MonitorPath+"/"); next == "/" || ok && monitorPage.MatchString(rest) {
		return next
	}
	return "/"
}

// monitorPage matches the path of a monitor page below MonitorPath+"/".
var monitorPage = regexp.MustCompile(`^([A-Za-z0-9_~-][A-Za-z0-9._~-]*(/|$))*$`)

func (s *server) loginForm(c *gin.Context) {
	s.renderLogin(c, http.StatusOK, c.Query("next"), "")
}

func (s *server) renderLogin(c *gin.Context, status int, next, problem string) {
	pageHeaders(c)
	c.Status(status)
	c.Header("Content-Type", "text/html; charset=utf-8")
	if err := loginPage.Execute(c.Writer, struct{ Next, Problem string }{safeNext(next), problem}); err != nil {
		s.log.ErrorContext(c, "render login page", "err", err)
	}
}

// login checks the admin token from the sign-in form and sets the session
// cookie.
func (s *server) login(c *gin.Context) {
	if crossSite(c) {
		abort(c, http.StatusForbidden, "cross_site", "sign-in from another site refused")
		return
	}
	// PostForm drops a parse error: a form past the body limit (chunked,
	// so not refused on its Content-Length) would read as an empty token.
	if err := c.Request.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			rerr := tooLarge(tooBig.Limit)
			abort(c, rerr.status, rerr.code, rerr.message)
			return
		}
		abort(c, http.StatusBadRequest, "invalid_request", "the sign-in form could not be read")
		return
	}
	next := safeNext(c.PostForm("next"))
	token := c.PostForm("token")
	if s.cfg.AdminToken == "" {
		s.renderLogin(c, http.StatusUnauthorized, next, "Admin access is disabled: no admin token is configured.")
		return
	}
	// Digests compared, as for the bearer token: ConstantTimeCompare of the
	// strings themselves returns at once on a length mismatch, which tells
	// the token's length.
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(s.cfg.AdminToken))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		s.log.WarnContext(c, "admin sign-in refused", "remote", c.ClientIP())
		s.renderLogin(c, http.StatusUnauthorized, next, "Wrong token.")
		return
	}
	exp := time.Now().Add(SessionTTL)
	http.SetCookie(c.Writer, &http.Cookie{
		Name: SessionCookie, Value: sessionValue(s.cfg.AdminToken, exp), Path: "/",
		Expires: exp, MaxAge: int(SessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(c),
	})
	s.log.InfoContext(c, "admin signed in", "remote", c.ClientIP())
	c.Redirect(http.StatusSeeOther, next)
}

func (s *server) logout(c *gin.Context) {
	if crossSite(c) {
		abort(c, http.StatusForbidden, "cross_site", "sign-out from another site refused")
		return
	}
	http.SetCookie(c.Writer, &http.Cookie{
		Name: SessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(c),
	})
	c.Redirect(http.StatusSeeOther, "/login")
}

// crossSite reports whether a form was posted from another site: the
// browser says so in Sec-Fetch-Site, or, for browsers without it, the
// Origin names another host than the request's. A request with neither
// header (curl, a script) is not a browser's cross-site form.
func crossSite(c *gin.Context) bool {
	switch c.GetHeader("Sec-Fetch-Site") {
	case "same-origin", "none":
		return false
	case "":
	default:
		return true
	}
	origin := c.GetHeader("Origin")
	if origin == "" || origin == "null" {
		return origin == "null"
	}
	u, err := url.Parse(origin)
	return err != nil || !strings.EqualFold(u.Host, c.Request.Host)
}

// secureRequest reports whether the browser reached us over TLS, directly or
// through a proxy that says so.
func secureRequest(c *gin.Context) bool {
	return c.Request.TLS != nil || strings.EqualFold(c.GetHeader("X-Forwarded-Proto"), "https")
}
