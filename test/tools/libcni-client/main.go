// libcni-client drives CNI plugins through libcni, the runtime library containerd, CRI-O and podman link,
// so the tests see exactly what those runtimes send: the same environment, per-plugin config (name,
// cniVersion, prevResult, runtimeConfig from capabilities), the same result cache and the same error parsing.
//
// It is built offline against Debian's golang-github-appc-cni-dev (libcni 1.1.2, CNI spec up to 1.0.0, the
// library containerd 1.6/1.7, CRI-O 1.2x and podman 4 ship). That libcni has no STATUS and no GC; the
// "status" and "gc" subcommands below follow libcni 1.2's GetStatusNetworkList and GCNetworkList step by
// step, on top of Debian's real pkg/invoke (same exec, environment and error decoding), so the 1.1.0 verbs
// are driven the way a newer runtime drives them. Everything else is plain libcni.
//
// Usage: libcni-client <add|check|del|status|gc|validate|version> [flags]
// Result JSON (add) and version info go to stdout; errors go to stderr with exit status 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
)

type attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

type options struct {
	conflist  string
	confDir   string
	netName   string
	cniPath   string
	cid       string
	netns     string
	ifname    string
	cacheDir  string
	capArgs   string
	cniArgs   string
	valid     string
	timeoutMs int
}

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: libcni-client <add|check|del|status|gc|validate|version> [flags]"))
	}
	cmd := os.Args[1]
	var o options
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	fs.StringVar(&o.conflist, "conflist", "", "path of a .conflist (or .conf) file")
	fs.StringVar(&o.confDir, "confdir", "", "configuration directory (with -net), searched as runtimes do")
	fs.StringVar(&o.netName, "net", "", "network name to load from -confdir")
	fs.StringVar(&o.cniPath, "cni-path", "/opt/cni/bin", "plugin directories, ':'-separated")
	fs.StringVar(&o.cid, "cid", "", "container ID")
	fs.StringVar(&o.netns, "netns", "", "network namespace path ('' as containerd's second DEL)")
	fs.StringVar(&o.ifname, "ifname", "eth0", "interface name in the container")
	fs.StringVar(&o.cacheDir, "cache-dir", "", "libcni result cache directory (runtimes default to /var/lib/cni)")
	fs.StringVar(&o.capArgs, "cap-args", "", "capability arguments as a JSON object, e.g. {\"portMappings\":[...]}")
	fs.StringVar(&o.cniArgs, "args", "", "CNI_ARGS as K=V;K=V (as podman sends IP=...)")
	fs.StringVar(&o.valid, "valid", "", "gc: JSON list of valid attachments [{containerID, ifname}]; absent = no list")
	fs.IntVar(&o.timeoutMs, "timeout-ms", 60000, "overall deadline, as runtimes put on every CNI call")
	if err := fs.Parse(os.Args[2:]); err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(o.timeoutMs)*time.Millisecond)
	defer cancel()
	if err := runCmd(ctx, cmd, &o); err != nil {
		cancel()
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err.Error())
	os.Exit(1)
}

func runCmd(ctx context.Context, cmd string, o *options) error {
	list, err := loadList(o)
	if err != nil {
		return err
	}
	paths := filepath.SplitList(o.cniPath)
	// nil exec = libcni's default RawExec, exactly what containerd/CRI-O/podman use.
	cni := libcni.NewCNIConfigWithCacheDir(paths, o.cacheDir, nil)
	rt, err := runtimeConf(o)
	if err != nil {
		return err
	}
	switch cmd {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		return res.Print()
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	case "validate":
		// CRI-O validates every network it loads: VERSION to each plugin, and the list's cniVersion must be
		// among the plugin's supported versions.
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			return err
		}
		return printJSON(map[string]interface{}{"capabilities": caps})
	case "version":
		out := map[string]interface{}{}
		for _, p := range list.Plugins {
			vi, err := cni.GetVersionInfo(ctx, p.Network.Type)
			if err != nil {
				return fmt.Errorf("VERSION of %s: %w", p.Network.Type, err)
			}
			out[p.Network.Type] = vi.SupportedVersions()
		}
		return printJSON(out)
	case "status":
		return statusNetworkList(ctx, cni, list)
	case "gc":
		var valid []attachment
		haveList := o.valid != ""
		if haveList {
			if err := json.Unmarshal([]byte(o.valid), &valid); err != nil {
				return fmt.Errorf("-valid: %w", err)
			}
			if valid == nil {
				valid = []attachment{}
			}
		}
		return gcNetworkList(ctx, cni, list, cacheDirOr(o.cacheDir), valid, haveList)
	default:
		return fmt.Errorf("unknown subcommand %q", cmd)
	}
}

func loadList(o *options) (*libcni.NetworkConfigList, error) {
	if o.conflist != "" {
		if strings.HasSuffix(o.conflist, ".conflist") {
			return libcni.ConfListFromFile(o.conflist)
		}
		// A single .conf is wrapped in a list, as runtimes do.
		c, err := libcni.ConfFromFile(o.conflist)
		if err != nil {
			return nil, err
		}
		return libcni.ConfListFromConf(c)
	}
	if o.confDir == "" || o.netName == "" {
		return nil, errors.New("need -conflist, or -confdir and -net")
	}
	list, err := libcni.LoadConfList(o.confDir, o.netName)
	if err != nil {
		return nil, err
	}
	return list, nil
}

func runtimeConf(o *options) (*libcni.RuntimeConf, error) {
	rt := &libcni.RuntimeConf{ContainerID: o.cid, NetNS: o.netns, IfName: o.ifname}
	if o.cniArgs != "" {
		for _, kv := range strings.Split(o.cniArgs, ";") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("-args: %q is not K=V", kv)
			}
			rt.Args = append(rt.Args, [2]string{k, v})
		}
	}
	if o.capArgs != "" {
		if err := json.Unmarshal([]byte(o.capArgs), &rt.CapabilityArgs); err != nil {
			return nil, fmt.Errorf("-cap-args: %w", err)
		}
	}
	return rt, nil
}

func cacheDirOr(dir string) string {
	if dir == "" {
		return libcni.CacheDir
	}
	return dir
}

func printJSON(v interface{}) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(b))
	return err
}

// statusNetworkList is libcni 1.2's GetStatusNetworkList: a no-op below 1.1.0, otherwise STATUS to each
// plugin with only name and cniVersion injected, stopping at the first error.
func statusNetworkList(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList) error {
	if ok, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0"); !ok {
		return nil
	}
	inject := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
	for _, p := range list.Plugins {
		conf, err := libcni.InjectConf(p, inject)
		if err != nil {
			return fmt.Errorf("failed to generate configuration to get plugin STATUS %s: %w", p.Network.Type, err)
		}
		if err := execNoResult(ctx, cni, conf, "STATUS"); err != nil {
			return err
		}
	}
	return nil
}

// gcNetworkList is libcni 1.2's GCNetworkList: DEL every cached attachment of this network that is not in
// the valid list (through the real DelNetworkList), then, from 1.1.0, GC to every plugin with the list
// injected as "cni.dev/valid-attachments" (no key when the runtime has no list). Errors are collected.
func gcNetworkList(ctx context.Context, cni *libcni.CNIConfig, list *libcni.NetworkConfigList, cacheDir string, valid []attachment, haveList bool) error {
	validSet := map[attachment]bool{}
	for _, a := range valid {
		validSet[a] = true
	}
	var errs []error
	for _, c := range cachedAttachments(cacheDir) {
		if c.NetworkName != list.Name || validSet[attachment{c.ContainerID, c.IfName}] {
			continue
		}
		rt := &libcni.RuntimeConf{ContainerID: c.ContainerID, NetNS: c.NetNS, IfName: c.IfName, Args: c.CniArgs, CapabilityArgs: c.CapabilityArgs}
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("failed to delete stale attachment %s %s: %w", rt.ContainerID, rt.IfName, err))
		}
	}
	if ok, _ := version.GreaterThanOrEqualTo(list.CNIVersion, "1.1.0"); ok {
		inject := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
		if haveList {
			inject["cni.dev/valid-attachments"] = valid
		}
		for _, p := range list.Plugins {
			conf, err := libcni.InjectConf(p, inject)
			if err != nil {
				errs = append(errs, fmt.Errorf("failed to generate configuration to GC plugin %s: %w", p.Network.Type, err))
				continue
			}
			if err := execNoResult(ctx, cni, conf, "GC"); err != nil {
				errs = append(errs, fmt.Errorf("failed to GC plugin %s: %w", p.Network.Type, err))
			}
		}
	}
	return joinErrors(errs)
}

// joinErrors is errors.Join (Go 1.20), which Debian 12's Go 1.19 lacks.
func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// execNoResult runs one plugin as libcni 1.2 does for STATUS and GC: container ID, netns, ifname and args
// empty, CNI_PATH set.
func execNoResult(ctx context.Context, cni *libcni.CNIConfig, conf *libcni.NetworkConfig, command string) error {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	pluginPath, err := exec.FindInPath(conf.Network.Type, cni.Path)
	if err != nil {
		return err
	}
	args := &invoke.Args{Command: command, Path: strings.Join(cni.Path, string(os.PathListSeparator))}
	return invoke.ExecPluginWithoutResult(ctx, pluginPath, conf.Bytes, args, exec)
}

type cacheEntry struct {
	Kind           string                 `json:"kind"`
	ContainerID    string                 `json:"containerId"`
	IfName         string                 `json:"ifName"`
	NetworkName    string                 `json:"networkName"`
	NetNS          string                 `json:"netns,omitempty"`
	CniArgs        [][2]string            `json:"cniArgs,omitempty"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs,omitempty"`
}

// cachedAttachments reads libcni's result cache (<cacheDir>/results/*) as libcni 1.2's
// GetCachedAttachments does; unreadable or foreign files are skipped.
func cachedAttachments(cacheDir string) []cacheEntry {
	files, _ := filepath.Glob(filepath.Join(cacheDir, "results", "*"))
	var out []cacheEntry
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var c cacheEntry
		if json.Unmarshal(b, &c) != nil || c.Kind != libcni.CNICacheV1 || c.ContainerID == "" || c.IfName == "" {
			continue
		}
		out = append(out, c)
	}
	return out
}
