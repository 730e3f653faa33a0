package config

import "strings"

// secretFlags lists the flags whose values must never appear in an error or
// log line, with how to show them instead. The list covers flags of every
// skiff command (agent-token belongs to commands other than Server).
var secretFlags = map[string]func(string) string{
	"token":              func(string) string { return "<redacted>" },
	"agent-token":        func(string) string { return "<redacted>" },
	"datastore-endpoint": RedactURL,
}

// redactValue returns value as it may be shown for flag.
func redactValue(flag, value string) string {
	if redact, ok := secretFlags[flag]; ok {
		return redact(value)
	}
	return value
}

// RedactURL replaces the password in a URL such as
// scheme://user:pass@host/db with "xxxxx", and the value of a "password"
// query parameter likewise. Strings without a password come back unchanged.
//
// It works on the text rather than through net/url because datastore
// endpoints are often not valid URLs (mysql://u:p@tcp(host:3306)/db) and
// passwords often hold unescaped '@', '/' or '?'; the password must be hidden
// all the same. When the text is ambiguous it hides too much, not too little.
func RedactURL(s string) string {
	prefix, rest := "", s
	if i := strings.Index(s, "://"); i >= 0 && isScheme(s[:i]) {
		prefix, rest = s[:i+3], s[i+3:]
	}
	// The user info ends at the last '@': hosts, paths and queries almost
	// never hold one, random passwords often do.
	userinfo := ""
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		userinfo, rest = rest[:at+1], rest[at+1:]
		if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
			userinfo = user + ":xxxxx@"
		}
	}
	return prefix + userinfo + redactQueryPassword(rest)
}

// redactQueryPassword hides the value of password=... in the query of
// "host/db?a=b&password=c".
func redactQueryPassword(s string) string {
	base, query, ok := strings.Cut(s, "?")
	if !ok {
		return s
	}
	params := strings.Split(query, "&")
	for i, p := range params {
		if key, _, ok := strings.Cut(p, "="); ok && strings.EqualFold(key, "password") {
			params[i] = key + "=xxxxx"
		}
	}
	return base + "?" + strings.Join(params, "&")
}
