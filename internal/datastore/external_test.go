package datastore

import (
	"slices"
	"testing"
)

func TestDialTargets(t *testing.T) {
	for _, tc := range []struct {
		kind, endpoint string
		want           []string
	}{
		{"sqlite", "", nil},
		{"postgres", "postgres://skiff:p@ss/w@rd@db.example:5433/skiff?sslmode=require", []string{"db.example:5433"}},
		{"postgres", "postgres://skiff@db/skiff", []string{"db:5432"}},
		{"postgres", "postgres://u:p@h1:5432,h2/skiff", []string{"h1:5432", "h2:5432"}},
		{"postgres", "postgres://u:p@/skiff?host=/run/postgresql", nil},
		{"mysql", "mysql://root:pw@tcp(10.0.0.5:3307)/skiff", []string{"10.0.0.5:3307"}},
		{"mysql", "mysql://root:pw@tcp(db)/skiff", []string{"db:3306"}},
		{"mysql", "mysql://root:pw@unix(/run/mysqld/mysqld.sock)/skiff", nil},
		{"etcd", "https://e1:2379,https://[fd00::1]:2379,http://e3", []string{"e1:2379", "[fd00::1]:2379", "e3:2379"}},
		{"etcd", "unix:///run/etcd.sock", nil},
	} {
		if got := dialTargets(tc.kind, tc.endpoint); !slices.Equal(got, tc.want) {
			t.Errorf("dialTargets(%s, %s) = %q, want %q", tc.kind, tc.endpoint, got, tc.want)
		}
	}
}

func TestRetryWait(t *testing.T) {
	var got []string
	for n := 1; n <= 6; n++ {
		got = append(got, retryWait(n).String())
	}
	if want := []string{"1s", "2s", "4s", "5s", "5s", "5s"}; !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
}
