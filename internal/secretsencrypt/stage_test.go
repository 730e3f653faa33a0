package secretsencrypt

import (
	"strings"
	"testing"

	"github.com/skiffkube/skiff/internal/controlplane"
)

func names(k Keys) []string {
	var out []string
	for _, x := range k {
		out = append(out, x.Label())
	}
	return out
}

// The classic rotation: prepare adds a key that only reads, rotate makes
// it primary, reencrypt requests the rewrite and Finish drops the old key.
func TestClassicRotation(t *testing.T) {
	k, _ := Initial(AESCBC, now)
	s := State{Stage: StageStart}
	s, k, err := Apply(OpPrepare, s, k, AESCBC, now)
	if err != nil {
		t.Fatal(err)
	}
	if s.Stage != StagePrepare || k.Primary().Name != "aescbckey" || len(k) != 3 || k.Find(s.Prepared) != 1 {
		t.Fatalf("after prepare: %+v %v", s, names(k))
	}
	prepared := s.Prepared
	s, k, err = Apply(OpRotate, s, k, AESCBC, now)
	if err != nil {
		t.Fatal(err)
	}
	if s.Stage != StageRotate || k.Primary().Name != prepared || k.Find("aescbckey") < 0 {
		t.Fatalf("after rotate: %+v %v", s, names(k))
	}
	s, k, err = Apply(OpReencrypt, s, k, AESCBC, now)
	if err != nil || s.Stage != StageReencryptRequest {
		t.Fatalf("reencrypt: %+v %v", s, err)
	}
	k = Finish(k, false)
	if got := strings.Join(names(k), ","); got != "aescbc:"+prepared+",identity" {
		t.Errorf("after finish: %s", got)
	}
}

func TestRotateKeysMakesTheNewKeyPrimary(t *testing.T) {
	k, _ := Initial(AESCBC, now)
	s, k2, err := Apply(OpRotateKeys, State{Stage: StageReencryptFinished}, k, Secretbox, now)
	if err != nil {
		t.Fatal(err)
	}
	if s.Stage != StageReencryptRequest || k2.Primary().Type != Secretbox || k2.Find("aescbckey") < 0 {
		t.Fatalf("%+v %v", s, names(k2))
	}
	if got := names(Finish(k2, false)); len(got) != 2 || got[1] != Identity {
		t.Errorf("finish: %v", got)
	}
	if got := Finish(k2, true); len(got) != 3 {
		t.Errorf("finish keeping the old keys: %v", names(got))
	}
}

func TestDisableAndEnableMoveIdentity(t *testing.T) {
	k, _ := Initial(AESCBC, now)
	_, d, err := Apply(OpDisable, State{Stage: StageStart}, k, AESCBC, now)
	if err != nil || d.Enabled() || d.Primary().Type != Identity || d.Find("aescbckey") != 1 {
		t.Fatalf("disable: %v %v", names(d), err)
	}
	// Decrypting keeps the key, so enable can use it again.
	if len(Finish(d, false)) != 2 {
		t.Error("finish while disabled dropped a key")
	}
	_, e, err := Apply(OpEnable, State{Stage: StageReencryptFinished}, d, AESCBC, now)
	if err != nil || !e.Enabled() || e.Primary().Name != "aescbckey" || e[len(e)-1].Type != Identity {
		t.Fatalf("enable: %v %v", names(e), err)
	}
}

// Every refusal names the stage and what to do; Apply changes nothing.
func TestRefusals(t *testing.T) {
	enabled, _ := Initial(AESCBC, now)
	_, disabled, _ := Apply(OpDisable, State{Stage: StageStart}, enabled, AESCBC, now)
	for _, c := range []struct {
		op    string
		stage Stage
		keys  Keys
		want  string
	}{
		{OpRotate, StageRotate, enabled, "the previous rotation is unfinished (stage rotate)"},
		{OpRotate, StageStart, enabled, "no key is prepared (stage start)"},
		{OpRotate, StageReencryptFinished, enabled, "no key is prepared"},
		{OpPrepare, StagePrepare, enabled, "a key is prepared already"},
		{OpPrepare, StageRotate, enabled, "the previous rotation is unfinished"},
		{OpRotateKeys, StageRotate, enabled, "the previous rotation is unfinished"},
		{OpRotateKeys, StageStart, disabled, "secrets encryption is disabled"},
		{OpReencrypt, StagePrepare, enabled, "the prepared key is not primary yet"},
		{OpRotate, StageReencryptActive, enabled, "a reencrypt is running"},
		{OpEnable, StageReencryptRequest, enabled, "a reencrypt is running"},
		{OpDisable, StagePrepare, enabled, "a key rotation is unfinished"},
		{"explode", StageStart, enabled, "unknown operation"},
	} {
		s := State{Stage: c.stage, Prepared: "p"}
		gotS, gotK, err := Apply(c.op, s, c.keys, AESCBC, now)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s at %s: %v, want %q", c.op, c.stage, err, c.want)
		}
		if gotS != s || len(gotK) != len(c.keys) {
			t.Errorf("%s at %s changed the state or keys: %+v %v", c.op, c.stage, gotS, names(gotK))
		}
	}
	for _, c := range []struct {
		op    string
		stage Stage
	}{
		{OpPrepare, StageStart}, {OpPrepare, StageReencryptFinished}, {OpRotate, StagePrepare},
		{OpReencrypt, StageRotate}, {OpReencrypt, StageStart}, {OpReencrypt, StageReencryptFinished},
		{OpRotateKeys, StageStart}, {OpEnable, StageStart}, {OpDisable, StageReencryptFinished},
	} {
		if err := Check(c.op, c.stage, enabled); err != nil {
			t.Errorf("%s at %s refused: %v", c.op, c.stage, err)
		}
	}
}

func TestStateFile(t *testing.T) {
	l := controlplane.Layout{DataDir: t.TempDir()}
	s, err := ReadState(l)
	if err != nil || s.Stage != StageStart {
		t.Fatalf("no state: %+v %v", s, err)
	}
	want := State{Stage: StagePrepare, Prepared: "k2"}
	if err := WriteState(l, want); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadState(l); err != nil || got != want {
		t.Fatalf("read %+v %v", got, err)
	}
}
