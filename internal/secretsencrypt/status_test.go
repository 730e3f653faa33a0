package secretsencrypt

import (
	"bytes"
	"strings"
	"testing"
)

func TestCountByStoredPrefix(t *testing.T) {
	values := [][]byte{
		[]byte("k8s:enc:aescbc:v1:new:\x01\x02"),
		[]byte("k8s:enc:aescbc:v1:old:\x01\x02"),
		[]byte("k8s\x00\x0a\x0fplain"),
		[]byte("k8s:enc:secretbox:v1:box:xx"),
	}
	c := Count(values, Key{Type: AESCBC, Name: "new"})
	if c.Total != 4 || c.WithPrimary != 1 || c.ByKey["aescbc:old"] != 1 || c.ByKey[Identity] != 1 || c.ByKey["secretbox:box"] != 1 {
		t.Errorf("%+v", c)
	}
	if c := Count(values[2:3], Key{Type: Identity}); c.WithPrimary != 1 {
		t.Errorf("plain text with identity primary: %+v", c)
	}
}

func TestFormatSaysK3sLinesAndTheSecrets(t *testing.T) {
	st := &Status{Configured: true, Enabled: true, Stage: StageRotate, Applied: true,
		Keys:    []KeyStatus{{Active: true, Type: AESCBC, Name: "k2"}, {Type: AESCBC, Name: "aescbckey"}, {Type: Identity}},
		Secrets: &SecretCount{Total: 3, WithPrimary: 1, ByKey: map[string]int{"aescbc:k2": 1, "aescbc:aescbckey": 2}}}
	var b bytes.Buffer
	if err := st.Format(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Encryption Status: Enabled\n", "Current Rotation Stage: rotate\n",
		"Secrets: 2 of 3 not stored with the active key (1 aescbc:k2, 2 aescbc:aescbckey)",
		" *      AES-CBC", "Identity",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in\n%s", want, b.String())
		}
	}
}
