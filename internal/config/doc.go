// Package config builds the typed configuration of skiff's commands from
// command-line flags, environment variables and YAML files.
//
// Every option is a pflag flag bound to a field of a typed struct (see
// Server.AddFlags); the flag's default is the option's default. ApplySources
// then fills in every flag the user did not set on the command line, so one
// option has exactly one name everywhere:
//
//	flag --tls-san          env SKIFF_TLS_SAN          file key tls-san
//
// Precedence, highest first:
//
//  1. the command line
//  2. the environment: SKIFF_<NAME>, the flag name upper-cased with '-' as '_'
//  3. the config files: the config file (default /etc/skiff/config.yaml), then
//     every *.yaml and *.yml in <config file>.d/ in lexical order; a later file
//     replaces an earlier file's value key by key, and a key written "name+"
//     appends to the list gathered so far instead (as K3s does)
//  4. the flag's default
//
// A source replaces a list as a whole; lists are not merged across levels.
// Within one file, keys apply in the order written, and a key may appear
// only once.
//
// The usual sequence in a command is:
//
//	var cfg config.Server
//	cfg.AddFlags(fs)
//	config.AddConfigFlag(fs, &path)
//	... fs.Parse ...
//	err := config.ApplySources(fs, config.SourcesFromFlags(fs, os.LookupEnv))
//	err = cfg.Complete()
//	errs := cfg.Validate()
package config
