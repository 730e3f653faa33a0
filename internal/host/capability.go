package host

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CapSysResource is CAP_SYS_RESOURCE. Without it in the bounding set
// containerd cannot lower a container's oom_score_adj below its own, which
// is why skiff then sets containerd's restrict_oom_score_adj.
const CapSysResource = 24

// HasBoundingCapability reports whether capability capNumber is in this
// process's bounding set (CapBnd in /proc/self/status), which caps what any
// process skiff starts, containers included, can ever hold.
func (h Host) HasBoundingCapability(capNumber int) (bool, error) {
	if capNumber < 0 || capNumber > 63 {
		return false, fmt.Errorf("capability %d is out of the range 0-63", capNumber)
	}
	path := h.ProcPath("self/status")
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("reading the capability bounding set: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "CapBnd:")
		if !ok {
			continue
		}
		set, err := strconv.ParseUint(strings.TrimSpace(rest), 16, 64)
		if err != nil {
			return false, fmt.Errorf("parsing CapBnd in %s: %w", path, err)
		}
		return set&(1<<uint(capNumber)) != 0, nil
	}
	return false, fmt.Errorf("%s has no CapBnd line", path)
}
