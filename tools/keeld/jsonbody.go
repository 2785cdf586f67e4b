package main

// Strict JSON request bodies. encoding/json alone accepts an object with a
// name twice (the last wins: a "then" given twice silently dropped the
// first list) and rewrites invalid UTF-8 and lone UTF-16 surrogate escapes
// to U+FFFD (two distinct keys then collapse into one). checkJSONText
// refuses both before the body is decoded, and jsonDecodeError words
// decoding errors without Go type names.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"unicode/utf8"
)

// checkJSONText refuses JSON that encoding/json would read differently
// from what it says: invalid UTF-8, a lone surrogate escape, or an object
// naming a member twice. Syntax errors are left to the decoder.
func checkJSONText(body []byte) error {
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: body is not valid UTF-8 (send binary keys and values in base64 with \"encoding\":\"base64\")", errBadRequest)
	}
	if err := checkSurrogates(body); err != nil {
		return err
	}
	return checkDuplicateNames(body)
}

// checkSurrogates finds \uD800-\uDFFF escapes that are not a high
// surrogate followed by a low one, which encoding/json decodes to U+FFFD.
func checkSurrogates(body []byte) error {
	inString := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 >= len(body) {
				return nil // the decoder reports the truncation
			}
			if body[i+1] != 'u' {
				i++
				continue
			}
			r, ok := hex4(body, i+2)
			if !ok {
				return nil // a syntax error for the decoder
			}
			i += 5
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return fmt.Errorf("%w: body has a lone UTF-16 low surrogate escape \\u%04X", errBadRequest, r)
			case r >= 0xD800 && r <= 0xDBFF:
				lo, ok := rune(0), false
				if i+2 < len(body) && body[i+1] == '\\' && body[i+2] == 'u' {
					lo, ok = hex4(body, i+3)
				}
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return fmt.Errorf("%w: body has a lone UTF-16 high surrogate escape \\u%04X", errBadRequest, r)
				}
				i += 6
			}
		}
	}
	return nil
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[at:at+4]), 16, 32)
	return rune(v), err == nil
}

// checkDuplicateNames walks the tokens and refuses an object that names a
// member twice.
func checkDuplicateNames(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	// One frame per open object or array; names is nil for arrays.
	type frame struct {
		names   map[string]bool
		wantKey bool
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // syntax: the decoder reports it in its own words
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].names != nil && stack[top].wantKey {
			if name, ok := tok.(string); ok {
				if stack[top].names[name] {
					return fmt.Errorf("%w: body names %q twice in one object", errBadRequest, name)
				}
				stack[top].names[name] = true
				stack[top].wantKey = false
				continue
			}
		}
		// A value (or a closing delimiter) ends a member.
		if top >= 0 && stack[top].names != nil {
			stack[top].wantKey = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{names: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].names != nil {
				stack[len(stack)-1].wantKey = true
			}
		}
	}
}

// jsonDecodeError words an encoding/json error for the client: where in
// the body and what JSON was expected, without Go type names. what names
// the body ("txn body").
func jsonDecodeError(what string, err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		if te.Field == "" {
			return fmt.Errorf("%w: %s must be a JSON object, not %s", errBadRequest, what, jsonKind(te.Value))
		}
		return fmt.Errorf("%w: %s: %q must be %s, not %s", errBadRequest, what, te.Field, jsonWant(te.Type), jsonKind(te.Value))
	case errors.As(err, &se):
		return fmt.Errorf("%w: %s is not valid JSON at byte %d: %v", errBadRequest, what, se.Offset, se)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s is empty or ends early", errBadRequest, what)
	default:
		// Unknown fields ("json: unknown field \"x\"") carry no type names.
		return fmt.Errorf("%w: %s: %v", errBadRequest, what, err)
	}
}

func jsonKind(v string) string {
	switch v {
	case "object", "array":
		return "an " + v
	case "":
		return "that"
	default:
		return "a " + v
	}
}

func jsonWant(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	default:
		return "a number"
	}
}
