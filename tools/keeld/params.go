package main

// Query parameters. Each endpoint and method accepts a fixed set; an
// unknown name (a typo like ?prefx= would otherwise scan everything), a
// name given twice, or a bad percent-escape is refused with a JSON 400
// before the handler runs, so a request never does something other than
// what it says.

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// queryParams lists, per route name and method, the query parameters the
// handler reads. A method absent here takes none.
var queryParams = map[string]map[string][]string{
	"kv":            {http.MethodGet: {"stale"}, http.MethodHead: {"stale"}},
	"scan":          {http.MethodGet: {"prefix", "start", "end", "limit", "stale", "encoding"}},
	"admin_members": {http.MethodPost: {"addr"}},
	"status":        {http.MethodGet: {"members"}},
}

// checkQuery refuses a query string the endpoint would not read exactly as
// written.
func checkQuery(route, method, rawQuery string) error {
	if rawQuery == "" {
		return nil
	}
	// ParseQuery keeps going past a bad pair and reports the first error;
	// Request.URL.Query() drops the error, and with it the pair.
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return fmt.Errorf("%w: query string: %v", errBadRequest, err)
	}
	allowed := queryParams[route][method]
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	sort.Strings(names) // the first bad one, deterministically
	for _, name := range names {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			if len(allowed) == 0 {
				return fmt.Errorf("%w: unknown query parameter %q: %s %s takes none", errBadRequest, name, method, routePath(route))
			}
			return fmt.Errorf("%w: unknown query parameter %q: %s %s takes %s", errBadRequest, name, method, routePath(route), strings.Join(allowed, ", "))
		}
		if len(q[name]) > 1 {
			return fmt.Errorf("%w: query parameter %q given %d times", errBadRequest, name, len(q[name]))
		}
	}
	return nil
}

// routePath names a route in messages.
func routePath(route string) string {
	switch route {
	case "kv":
		return "/kv/{key}"
	case "scan":
		return "/kv"
	case "admin_members":
		return "/admin/members/{id}"
	case "admin_join":
		return "/admin/shards/{id}/join"
	case "admin_hash":
		return "/admin/shards/{id}/hash"
	default:
		return "/" + strings.ReplaceAll(route, "_", "/")
	}
}

// decodeBase64 reads a key given in base64 (standard alphabet with
// padding, as encoding/json writes []byte and as scan responses carry
// next_key).
func decodeBase64(what, s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		hint := ""
		if strings.ContainsRune(s, ' ') {
			// In a query string "+" means a space.
			hint = ` (percent-escape "+" as %2B in a URL)`
		}
		return nil, fmt.Errorf("%w: %s is not standard base64%s: %v", errBadRequest, what, hint, err)
	}
	return b, nil
}
