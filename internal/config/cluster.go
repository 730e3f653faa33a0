package config

import (
	"net/url"
	"path/filepath"

	"github.com/robfig/cron/v3"
)

// validateCluster checks the flags of several servers, embedded etcd and
// snapshots: their shapes and the combinations that cannot work.
func (s *Server) validateCluster() []error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if s.Server != "" {
		if u, err := url.Parse(s.Server); err != nil || u.Scheme != "https" || u.Host == "" {
			add(fieldError("server", "%q is not an https URL like https://10.0.0.1:6443", s.Server))
		}
	}
	if s.ClusterInit && s.Server != "" {
		add(fieldError("cluster-init", "cluster-init starts a new cluster and server joins an existing one: set one"))
	}
	if s.ClusterInit && s.DatastoreEndpoint != "" {
		add(fieldError("cluster-init", "cluster-init runs embedded etcd, datastore-endpoint an external datastore: set one"))
	}
	if s.Server != "" && s.DatastoreEndpoint != "" {
		add(fieldError("server", "servers on an external datastore find each other through it: drop server, keep datastore-endpoint and the same token"))
	}
	for _, f := range []struct{ flag, path string }{
		{"datastore-cafile", s.DatastoreCAFile},
		{"datastore-certfile", s.DatastoreCertFile},
		{"datastore-keyfile", s.DatastoreKeyFile},
	} {
		if f.path == "" {
			continue
		}
		if s.DatastoreEndpoint == "" {
			add(fieldError(f.flag, "only applies to an external datastore-endpoint"))
		}
	}
	if (s.DatastoreCertFile == "") != (s.DatastoreKeyFile == "") {
		add(fieldError("datastore-certfile", "datastore-certfile and datastore-keyfile go together: set both or neither"))
	}
	if s.ClusterResetRestorePath != "" && !s.ClusterReset {
		add(fieldError("cluster-reset-restore-path", "only applies with cluster-reset"))
	}
	if s.ClusterReset && s.Server != "" {
		add(fieldError("cluster-reset", "cluster-reset makes this server a cluster of its own: drop server"))
	}
	for _, err := range validateArgs(s.EtcdArgs) {
		add(fieldError("etcd-arg", "%v", err))
	}
	if s.EtcdSnapshotScheduleCron != "" {
		if _, err := cron.ParseStandard(s.EtcdSnapshotScheduleCron); err != nil {
			add(fieldError("etcd-snapshot-schedule-cron", "%q: %v", s.EtcdSnapshotScheduleCron, err))
		}
	}
	if s.EtcdSnapshotRetention < 1 {
		add(fieldError("etcd-snapshot-retention", "must be 1 or more, got %d", s.EtcdSnapshotRetention))
	}
	if d := s.EtcdSnapshotDir; d != "" && !filepath.IsAbs(d) {
		add(fieldError("etcd-snapshot-dir", "must be an absolute path, got %q", d))
	}
	return errs
}
