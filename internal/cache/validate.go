package cache

import (
	"strings"
	"unicode/utf16"
)

// Limits the real client enforces too; the messages use its wording.
const (
	maxKeyLength     = 512 // UTF-16 code units, as JavaScript counts
	maxKeys          = 10  // primary key plus restore keys
	maxVersionLength = 512
)

func validateKey(key string) error {
	if key == "" {
		return errorf(ErrInvalid, "Key Validation Error: key is empty.")
	}
	n := 0
	for _, r := range key {
		n += max(1, utf16.RuneLen(r))
	}
	if n > maxKeyLength {
		return errorf(ErrInvalid, "Key Validation Error: %s cannot be larger than %d characters.", key, maxKeyLength)
	}
	if strings.Contains(key, ",") {
		return errorf(ErrInvalid, "Key Validation Error: %s cannot contain commas.", key)
	}
	return nil
}

func validateKeys(keys []string) error {
	if len(keys) > maxKeys {
		return errorf(ErrInvalid, "Key Validation Error: Keys are limited to a maximum of %d.", maxKeys)
	}
	for _, k := range keys {
		if err := validateKey(k); err != nil {
			return err
		}
	}
	return nil
}

func validateVersion(v string) error {
	if v == "" {
		return errorf(ErrInvalid, "version is required")
	}
	if len(v) > maxVersionLength {
		return errorf(ErrInvalid, "version is longer than %d bytes", maxVersionLength)
	}
	return nil
}
