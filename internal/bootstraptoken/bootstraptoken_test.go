package bootstraptoken

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

func TestTokenLifecycle(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

	tok, err := Create(ctx, c, 24*time.Hour, "edge site 4", now)
	if err != nil {
		t.Fatal(err)
	}
	if !tokenRE.MatchString(tok) {
		t.Fatalf("token %q is not <id>.<secret>", tok)
	}
	forever, err := Create(ctx, c, 0, "", now)
	if err != nil {
		t.Fatal(err)
	}
	if !Valid(ctx, c, tok, now.Add(time.Hour)) || !Valid(ctx, c, forever, now.Add(1000*time.Hour)) {
		t.Fatal("fresh tokens not valid")
	}
	if Valid(ctx, c, tok, now.Add(25*time.Hour)) {
		t.Error("expired token still valid")
	}
	id, _, _ := strings.Cut(tok, ".")
	if Valid(ctx, c, id+".aaaaaaaaaaaaaaaa", now) {
		t.Error("wrong secret accepted")
	}
	if Valid(ctx, c, "not-a-token", now) {
		t.Error("garbage accepted")
	}

	list, err := List(ctx, c)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	var found bool
	for _, info := range list {
		if info.ID == id {
			found = true
			if info.Description != "edge site 4" || !info.Expires.Equal(now.Add(24*time.Hour)) {
				t.Errorf("info %+v", info)
			}
		}
	}
	if !found {
		t.Errorf("token %s not listed: %+v", id, list)
	}

	if err := Delete(ctx, c, tok); err != nil {
		t.Fatal(err)
	}
	if Valid(ctx, c, tok, now) {
		t.Error("deleted token still valid")
	}
	if err := Delete(ctx, c, id); err == nil || !strings.Contains(err.Error(), "no token with ID") {
		t.Errorf("second delete: %v", err)
	}
	if err := Delete(ctx, c, "BAD"); err == nil || !strings.Contains(err.Error(), "not a token ID") {
		t.Errorf("bad ID: %v", err)
	}
	if _, err := Create(ctx, c, -time.Hour, "", now); err == nil {
		t.Error("negative ttl accepted")
	}
}
