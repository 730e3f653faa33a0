package config

import "testing"

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://skiff:hunter2@db:5432/skiff", "postgres://skiff:xxxxx@db:5432/skiff"},
		{"postgres://skiff:hunter2@db/skiff?sslmode=require", "postgres://skiff:xxxxx@db/skiff?sslmode=require"},
		{"mysql://root:hunter2@tcp(db:3306)/skiff", "mysql://root:xxxxx@tcp(db:3306)/skiff"},
		// Unescaped special characters in the password.
		{"postgres://u:p@ss/w?rd@db/skiff", "postgres://u:xxxxx@db/skiff"},
		{"postgres://u:@db/skiff", "postgres://u:xxxxx@db/skiff"},
		{"postgres://db/skiff?user=u&password=hunter2", "postgres://db/skiff?user=u&password=xxxxx"},
		// "://" inside the password is not a scheme separator.
		{"u:top://secret@db/skiff", "u:xxxxx@db/skiff"},
		// DSN without a scheme.
		{"root:hunter2@tcp(db:3306)/skiff", "root:xxxxx@tcp(db:3306)/skiff"},
		// Nothing to hide.
		{"postgres://skiff@db:5432/skiff", "postgres://skiff@db:5432/skiff"},
		{"https://etcd-1:2379", "https://etcd-1:2379"},
		{"sqlite:///var/lib/skiff/state.db?_journal=WAL", "sqlite:///var/lib/skiff/state.db?_journal=WAL"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
