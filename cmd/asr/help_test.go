package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
)

func help(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	e := env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, isTerminal: func() bool { return false }}
	err := run(context.Background(), e, append([]string{"help"}, args...))
	return out.String(), err
}

// TestManualsListEveryFlag: each verb's OPTIONS are made from the flags it
// defines, every one with its usage string, so none is missing or bare.
func TestManualsListEveryFlag(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^    --([a-z][a-z-]*)`)
	want := map[string][]string{
		"restore":   {"source", "target", "file", "erase", "delta", "noprompt", "noverify", "puppetstrings", "log-format", "workers", "grow", "cacert", "checksum", "timeout", "retries", "interface", "allblocks", "trusted-key", "trusted-keys-dir"},
		"imagescan": {"source", "output", "chunksize", "level", "hash", "overwrite", "puppetstrings", "allblocks", "sign", "password-file"},
		"info":      {"source", "plist", "cacert", "checksum", "timeout", "retries", "interface", "allblocks", "trusted-key", "trusted-keys-dir"},
		"sign":      {"source", "key", "password-file", "remove", "minisig", "key-id", "add-minisig"},
		"server":    {"source", "config", "interface", "parity", "http", "log-format"},
		"browse":    {"timeout", "interface"},
		"push":      {"source", "cacert", "timeout"},
	}
	for verb, flags := range want {
		man, err := help(t, verb)
		if err != nil {
			t.Fatalf("asr help %s: %v", verb, err)
		}
		if strings.Contains(man, "UNDOCUMENTED") || strings.Contains(man, "@OPTIONS@") || strings.Contains(man, "@SOURCES@") {
			t.Errorf("asr help %s has a flag without usage or an unexpanded part:\n%s", verb, man)
		}
		opts := man[strings.Index(man, "\nOPTIONS\n"):]
		got := map[string]bool{}
		for _, m := range flagLine.FindAllStringSubmatch(opts, -1) {
			got[m[1]] = true
		}
		for _, f := range flags {
			if !got[f] {
				t.Errorf("asr help %s: OPTIONS lack --%s", verb, f)
			}
		}
		if m := regexp.MustCompile(`(?m)^    --[a-z-]+ (string|value|int)$|^    --[a-z-]+ (string|value|int) `).FindString(opts); m != "" {
			t.Errorf("asr help %s: %q names no argument: give its usage a `WORD`", verb, strings.TrimSpace(m))
		}
		if len(got) != len(flags) {
			t.Errorf("asr help %s lists %d flags, want %d: %v", verb, len(got), len(flags), got)
		}
		var dash bytes.Buffer
		e := env{stdin: strings.NewReader(""), stdout: &dash, stderr: &dash, getenv: func(string) string { return "" }, isTerminal: func() bool { return false }}
		run(context.Background(), e, []string{verb, "-h"})
		if !strings.Contains(man, "NAME\n    asr "+verb) || dash.String() != man {
			t.Errorf("asr help %s is not its manual, or asr %s -h prints another", verb, verb)
		}
	}
	if _, err := help(t, "nosuchverb"); err == nil || !strings.Contains(err.Error(), `no manual for "nosuchverb"`) {
		t.Errorf("asr help nosuchverb = %v, want no manual", err)
	}
	if _, err := help(t, "help"); err == nil {
		t.Errorf("asr help help succeeded")
	}
}

// TestRestoreManualListsSchemes: the SOURCE list comes from the scheme table.
func TestRestoreManualListsSchemes(t *testing.T) {
	man, err := help(t, "restore")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a prepared image", "a block device", "http(s)://HOST/IMG", "asr://HOST[:PORT]", "X-Amz-Signature", "oci://HOST/REPO:TAG", "DOCKER_CONFIG"} {
		if !strings.Contains(man, s) {
			t.Errorf("asr help restore lacks %q", s)
		}
	}
}

// TestREADMEShowsEveryVerb: the README's "Using it" list has a line for
// every verb of 'asr help' (it once left out server and browse).
func TestREADMEShowsEveryVerb(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	verbs := usageMain[strings.Index(usageMain, "\nVERBS\n"):strings.Index(usageMain, "\nOptions take")]
	for _, m := range regexp.MustCompile(`(?m)^    ([a-z]+) `).FindAllStringSubmatch(verbs, -1) {
		if v := m[1]; v != "help" && v != "version" && !strings.Contains(string(b), "\nasr "+v+" ") {
			t.Errorf("README.md has no usage line for asr %s", v)
		}
	}
}
