// Package redact hides the secrets of connection strings in messages.
package redact

import (
	"net/url"
	"strings"
)

// Hidden replaces what is hidden.
const Hidden = "***"

// secretParams are query parameters that carry secrets: go-redis's and
// asynq's password and username overrides, libpq's and pgx's password,
// sslpassword and the like.
var secretParams = []string{"password", "sslpassword", "pass", "passwd", "secret", "token", "sslkey"}

// URL returns raw as a message may show it: a URL with the password of its
// user info and the values of secret query parameters replaced by [Hidden].
// Anything that is not a scheme://host URL (a libpq "key=value" string, a
// typo) is hidden entirely, since there is no telling where a secret sits.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return "(hidden: not a URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "x")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			if isSecret(k) {
				q[k] = []string{"x"}
			}
		}
		u.RawQuery = q.Encode()
	}
	// The placeholder is set as "x" and replaced after String, which
	// would escape "*".
	s := u.String()
	if _, ok := u.User.Password(); ok {
		s = strings.Replace(s, ":x@", ":"+Hidden+"@", 1)
	}
	if u.RawQuery != "" {
		base, query, _ := strings.Cut(s, "?")
		parts := strings.Split(query, "&")
		for i, p := range parts {
			if k, _, ok := strings.Cut(p, "="); ok && isSecret(k) {
				parts[i] = k + "=" + Hidden
			}
		}
		s = base + "?" + strings.Join(parts, "&")
	}
	return s
}

// URLs is [URL] of each comma-separated part of raw.
func URLs(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = URL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func isSecret(param string) bool {
	p := strings.ToLower(param)
	for _, s := range secretParams {
		if p == s {
			return true
		}
	}
	return false
}
