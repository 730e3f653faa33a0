package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// nodeSample is one start of `skiff server` with its node.
type nodeSample struct {
	nodeReady  time.Duration   // exec → "skiff server ready" (the Node is Ready)
	allPods    time.Duration   // Deployment created → every replica Running and Ready
	podStart   []time.Duration // per pod: created → Ready condition
	mem        memory          // skiff, containerd and every shim, idle, before the workload
	containerd memory          // containerd alone
}

// nodeReplicas is the size of the Deployment whose start is timed.
const nodeReplicas = 10

// pauseImage is skiff's built-in sandbox image; it is also the workload, so the
// measure is skiff's and the runtime's, not an application's.
const pauseImage = "skiff.local/skiff/pause:1.0"

// runSkiffNode starts a full `skiff server` (control plane and node), waits for
// "ready" (Node Ready), lets it idle, reads the RSS of the whole tree including the
// shims containerd daemonized, then times a Deployment of nodeReplicas pods.
func runSkiffNode(ctx context.Context, bin string, settle time.Duration, extra ...string) (s nodeSample, err error) {
	dir, err := os.MkdirTemp("", "skiff-bench-node-")
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	ports, err := freePorts(4)
	if err != nil {
		return s, err
	}
	noConfig := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(noConfig, nil, 0o600); err != nil {
		return s, err
	}
	dataDir := filepath.Join(dir, "data")
	kubeconfig := filepath.Join(dir, "kubeconfig.yaml")
	defer killall(bin, dataDir)

	begin := time.Now()
	args := []string{"server",
		"--config", noConfig,
		"--data-dir", dataDir,
		"--write-kubeconfig", kubeconfig,
		"--https-listen-port", strconv.Itoa(ports[0]),
		"--kube-apiserver-arg=secure-port=" + strconv.Itoa(ports[1]),
		"--kube-controller-manager-arg=secure-port=" + strconv.Itoa(ports[2]),
		"--kube-scheduler-arg=secure-port=" + strconv.Itoa(ports[3])}
	p, err := startProc(dir, "skiff", bin, append(args, extra...)...)
	if err != nil {
		return s, err
	}
	procs := []*proc{p}
	defer stopAll(procs)
	if err := waitLog(ctx, p, "skiff server ready in"); err != nil {
		return s, err
	}
	s.nodeReady = time.Since(begin)

	select {
	case <-ctx.Done():
		return s, context.Cause(ctx)
	case <-time.After(settle):
	}
	if p.exited() {
		return s, fmt.Errorf("skiff exited while idle; end of its log:\n%s", p.tail())
	}
	s.mem = treeMemory(p.cmd.Process.Pid)
	for _, pid := range childrenByParent()[p.cmd.Process.Pid] {
		s.containerd = s.containerd.plus(processMemory(pid))
	}
	for _, pid := range pidsWithExeUnder(filepath.Join(dataDir, "data")) {
		s.mem = s.mem.plus(treeMemory(pid))
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return s, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return s, err
	}
	s.allPods, s.podStart, err = timeDeployment(ctx, client)
	return s, err
}

// timeDeployment creates a Deployment of nodeReplicas pause pods and waits until
// all are Ready.
func timeDeployment(ctx context.Context, c kubernetes.Interface) (time.Duration, []time.Duration, error) {
	labels := map[string]string{"app": "bench"}
	begin := time.Now()
	_, err := c.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(nodeReplicas)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "pause", Image: pauseImage, ImagePullPolicy: corev1.PullNever,
				}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return 0, nil, err
	}
	for {
		list, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=bench"})
		if err != nil {
			return 0, nil, err
		}
		var starts []time.Duration
		for _, p := range list.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					starts = append(starts, cond.LastTransitionTime.Sub(p.CreationTimestamp.Time))
				}
			}
		}
		if len(starts) == nodeReplicas {
			return time.Since(begin), starts, nil
		}
		select {
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("%d of %d pods ready: %w", len(starts), nodeReplicas, context.Cause(ctx))
		case <-time.After(pollInterval):
		}
	}
}

// waitLog waits until p's log contains text.
func waitLog(ctx context.Context, p *proc, text string) error {
	for {
		data, _ := os.ReadFile(p.log)
		if strings.Contains(string(data), text) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before %q; end of its log:\n%s", p.name, text, p.tail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q: %w; end of the log:\n%s", text, context.Cause(ctx), p.tail())
		case <-time.After(pollInterval):
		}
	}
}

// pidsWithExeUnder lists processes running a binary under dir: containerd's shims
// daemonize, so they are not skiff's descendants.
func pidsWithExeUnder(dir string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && strings.HasPrefix(exe, dir+"/") {
			out = append(out, pid)
		}
	}
	return out
}

// killall removes the node's pods, rules and interfaces after a run.
func killall(bin, dataDir string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = output(ctx, ".", bin, "killall", "--data-dir", dataDir)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s)-1) + 0.5)
	return s[i]
}

func printNodeReport(runs []nodeSample, settle time.Duration) {
	fmt.Printf("\n## skiff server with its node (control plane, containerd, kubelet, kube-proxy, flannel)\n\n")
	fmt.Printf("- starts: %d; medians; RSS read %s after ready, before any workload; the workload is %d replicas of the built-in pause image\n\n", len(runs), settle, nodeReplicas)
	med := func(get func(nodeSample) float64) float64 { return median(runs, get) }
	fmt.Println("| measure | skiff |")
	fmt.Println("| --- | ---: |")
	fmt.Printf("| exec → Node Ready | %.2f s |\n", med(func(r nodeSample) float64 { return r.nodeReady.Seconds() }))
	fmt.Printf("| Deployment created → %d pods Ready | %.2f s |\n", nodeReplicas, med(func(r nodeSample) float64 { return r.allPods.Seconds() }))
	fmt.Printf("| pod start (created → Ready), p50 | %.2f s |\n", med(func(r nodeSample) float64 { return percentile(r.podStart, 0.5).Seconds() }))
	fmt.Printf("| pod start (created → Ready), p99 | %.2f s |\n", med(func(r nodeSample) float64 { return percentile(r.podStart, 0.99).Seconds() }))
	fmt.Printf("| RSS, skiff + containerd + shims, idle (shared binary pages counted per process) | %s |\n", mib(int64(med(func(r nodeSample) float64 { return float64(r.mem.RSS) }))))
	fmt.Printf("| PSS, the same processes (shared pages counted once) | %s |\n", mib(int64(med(func(r nodeSample) float64 { return float64(r.mem.PSS) }))))
	fmt.Printf("| … anonymous | %s |\n", mib(int64(med(func(r nodeSample) float64 { return float64(r.mem.Anon) }))))
	fmt.Printf("| … of which containerd (RSS / PSS) | %s / %s |\n", mib(int64(med(func(r nodeSample) float64 { return float64(r.containerd.RSS) }))), mib(int64(med(func(r nodeSample) float64 { return float64(r.containerd.PSS) }))))
	fmt.Println("\nEvery run (Node Ready / all pods Ready / RSS):")
	for i, r := range runs {
		fmt.Printf("- run %d: %s / %s / %s\n", i+1, secs(r.nodeReady), secs(r.allPods), mib(r.mem.RSS))
	}
}

// agentSample is one join of `skiff agent` to a control-plane-only server.
type agentSample struct {
	ready time.Duration // agent exec → "skiff agent ready" (its Node is Ready)
	mem   memory        // the agent, its containerd, and any shims, idle
}

// runAgent starts `skiff server --disable-agent`, then `skiff agent` against it,
// times the agent to ready and measures its idle memory.
func runAgent(ctx context.Context, bin string, settle time.Duration) (s agentSample, err error) {
	dir, err := os.MkdirTemp("", "skiff-bench-agent-")
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	ports, err := freePorts(4)
	if err != nil {
		return s, err
	}
	noConfig := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(noConfig, nil, 0o600); err != nil {
		return s, err
	}
	serverData, agentData := filepath.Join(dir, "server"), filepath.Join(dir, "agent")
	defer killall(bin, agentData)
	srv, err := startProc(dir, "server", bin, "server", "--disable-agent",
		"--config", noConfig, "--data-dir", serverData,
		"--write-kubeconfig", filepath.Join(dir, "kubeconfig.yaml"),
		"--https-listen-port", strconv.Itoa(ports[0]),
		"--kube-apiserver-arg=secure-port="+strconv.Itoa(ports[1]),
		"--kube-controller-manager-arg=secure-port="+strconv.Itoa(ports[2]),
		"--kube-scheduler-arg=secure-port="+strconv.Itoa(ports[3]))
	if err != nil {
		return s, err
	}
	procs := []*proc{srv}
	defer func() { stopAll(procs) }()
	if err := waitLog(ctx, srv, "skiff server ready in"); err != nil {
		return s, err
	}
	tok, err := os.ReadFile(filepath.Join(serverData, "server", "token"))
	if err != nil {
		return s, err
	}
	begin := time.Now()
	lbPort, err := freePorts(1)
	if err != nil {
		return s, err
	}
	agent, err := startProc(dir, "agent", bin, "agent", "--config", noConfig, "--data-dir", agentData, "--lb-server-port", strconv.Itoa(lbPort[0]),
		"--server", "https://127.0.0.1:"+strconv.Itoa(ports[0]), "--token", strings.TrimSpace(string(tok)))
	if err != nil {
		return s, err
	}
	procs = append(procs, agent)
	if err := waitLog(ctx, agent, "skiff agent ready in"); err != nil {
		return s, err
	}
	s.ready = time.Since(begin)
	select {
	case <-ctx.Done():
		return s, context.Cause(ctx)
	case <-time.After(settle):
	}
	s.mem = treeMemory(agent.cmd.Process.Pid)
	for _, pid := range pidsWithExeUnder(filepath.Join(agentData, "data")) {
		s.mem = s.mem.plus(treeMemory(pid))
	}
	return s, nil
}

func printAgentReport(runs []agentSample, settle time.Duration) {
	fmt.Printf("\n## skiff agent joining a control-plane-only server on the same machine\n\n")
	fmt.Printf("- joins: %d; medians; memory read %s after ready, with no workload\n\n", len(runs), settle)
	med := func(get func(agentSample) float64) float64 { return median(runs, get) }
	fmt.Println("| measure | skiff agent |")
	fmt.Println("| --- | ---: |")
	fmt.Printf("| exec → Node Ready | %.2f s |\n", med(func(r agentSample) float64 { return r.ready.Seconds() }))
	fmt.Printf("| RSS, agent + containerd, idle | %s |\n", mib(int64(med(func(r agentSample) float64 { return float64(r.mem.RSS) }))))
	fmt.Printf("| PSS, the same | %s |\n", mib(int64(med(func(r agentSample) float64 { return float64(r.mem.PSS) }))))
	fmt.Printf("| … anonymous | %s |\n", mib(int64(med(func(r agentSample) float64 { return float64(r.mem.Anon) }))))
	fmt.Println("\nEvery run (Node Ready / PSS):")
	for i, r := range runs {
		fmt.Printf("- run %d: %s / %s\n", i+1, secs(r.ready), mib(r.mem.PSS))
	}
}

// allAddons turns off every bundled add-on: the baseline of the add-on runs.
var allAddons = []string{"--disable=coredns,local-storage,metrics-server,servicelb", "--disable-network-policy", "--disable-helm-controller"}

// printAddonReport compares a server node with every add-on on and with all
// off, started alternately in the same run.
func printAddonReport(on, off []nodeSample, settle time.Duration) {
	fmt.Printf("\n## A server with its node: bundled add-ons on vs. all off (%s)\n\n", strings.Join(allAddons, " "))
	fmt.Printf("- starts per side: %d, alternating; medians; memory read %s after ready, before any workload\n", len(on), settle)
	fmt.Printf("- \"ready\" is `skiff server ready`: the Node is Ready and every add-on reports ready (DNS answers, manifests applied, caches synced)\n\n")
	medOn := func(get func(nodeSample) float64) float64 { return median(on, get) }
	medOff := func(get func(nodeSample) float64) float64 { return median(off, get) }
	ready := func(r nodeSample) float64 { return r.nodeReady.Seconds() }
	rss := func(r nodeSample) float64 { return float64(r.mem.RSS) }
	pss := func(r nodeSample) float64 { return float64(r.mem.PSS) }
	fmt.Println("| measure | add-ons on | all off | on / off |")
	fmt.Println("| --- | ---: | ---: | ---: |")
	fmt.Printf("| exec → ready | %.2f s | %.2f s | %s |\n", medOn(ready), medOff(ready), ratio(medOn(ready), medOff(ready)))
	fmt.Printf("| PSS, whole node, idle | %s | %s | %s |\n", mib(int64(medOn(pss))), mib(int64(medOff(pss))), ratio(medOn(pss), medOff(pss)))
	fmt.Printf("| RSS summed, the same | %s | %s | %s |\n", mib(int64(medOn(rss))), mib(int64(medOff(rss))), ratio(medOn(rss), medOff(rss)))
}
