package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// intFlag and int64Flag set *p (a request's optional field) when the flag is given.
func intFlag(p **int) func(string) error {
	return func(s string) error {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		*p = &v
		return nil
	}
}

func int64Flag(p **int64) func(string) error {
	return func(s string) error {
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		*p = &v
		return nil
	}
}

// daysValue is a duration flag that also takes days ("30d"), as retention
// periods are counted; "0" turns the limit off.
type daysValue struct{ d *time.Duration }

func (v daysValue) String() string {
	if v.d == nil {
		return ""
	}
	if *v.d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", *v.d/(24*time.Hour))
	}
	return v.d.String()
}

func (v daysValue) Set(s string) error {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 {
			return fmt.Errorf("want a number of days (30d) or a duration (720h), got %q", s)
		}
		*v.d = time.Duration(days) * 24 * time.Hour
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("want a number of days (30d) or a duration (720h), got %q", s)
	}
	*v.d = d
	return nil
}
