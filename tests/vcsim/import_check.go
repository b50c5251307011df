// Command import_check proves an appliance OVA against VMware's vCenter simulator: it starts
// vcsim (the simulator package of Debian's govmomi 0.24) in process, imports the OVA with a
// govc importx options file through the calls `govc import.ova -options FILE` makes, reads
// the VM back and checks it against the expectations given on the command line. It prints one
// line per check (`ok` or `FAIL`, the field, what was expected and what was found) and exits
// 1 if any check failed or the import did not go through, 2 on a usage error.
//
// # Building
//
// The Rust test tests/tests/it/vcsim_import.rs builds it into the cargo target directory and
// runs it (it is one of the slow tests `cargo xtask test` runs). Only Debian's packages are
// used, in GOPATH mode (no module proxy, no go.mod): golang-go, golang-github-vmware-govmomi-dev
// and its one dependency golang-github-google-uuid-dev, under /usr/share/gocode. By hand, from
// the workspace root:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$PWD/target/vcsim/go-cache \
//	    CGO_ENABLED=0 go build -o target/vcsim/import_check ./tests/vcsim
//	target/vcsim/import_check -ova X.ova -options options.json -guest-id debian10_64Guest \
//	    -hardware-version 14 -scsi VirtualSCSI -nic VmxNet3 \
//	    -disk 0=17179869184 -disk 1=68719476736 -extra-config disk.EnableUUID=TRUE \
//	    -transports "com.vmware.guestInfo iso" -cdrom
//
// # The import
//
// Debian ships govmomi without govc, so govc/importx cannot be called as a library; this
// program makes the calls of govc 0.24's importx/ovf.go Import and Deploy in the same order:
// read the descriptor (the OVA's *.ovf member), resolve the options' NetworkMapping with the
// finder, OvfManager.CreateImportSpec with the descriptor and the options' Name (else the
// VirtualSystem's Name or id), DiskProvisioning, IPAllocationPolicy, IPProtocol, Deployment,
// PropertyMapping and NetworkMapping (an Error in the result fails the import; Warnings are
// printed), ResourcePool.ImportVApp into the datacenter's VM folder, wait for the
// HttpNfcLease, upload each FileItem's OVA member to its device URL (POST, streamVmdk) with
// the lease's progress updater running, complete the lease, then MarkAsTemplate if the options
// say so. (PowerOn, InjectOvfEnv and WaitForIP need a guest; they are not done.) Like govc, the
// pool is the default one: the simulator's cluster's root pool (VPX model, no stand-alone
// host VMs), the datastore the default one.
//
// # Who does what: vcsim itself, and the vCenter behaviour this program adds (vcenter.go)
//
// vcsim 0.24's OvfManager.CreateImportSpec (simulator/ovf_manager.go) builds from the OVF the
// CPUs, memory, SCSI and IDE controllers, the NIC (on the network the NetworkMapping names),
// the disks with their capacities, a CD-ROM on its IDE parent, the guest id and the hardware
// version; its ImportVApp creates the VM from that spec, MarkAsTemplate marks it. What it does
// not do, a real vCenter does, and vcenter.go adds it by wrapping two simulator objects (the
// OvfManager and the resource pools, the way simulator/example_extend_test.go extends vcsim),
// so that what the checks read back is what the simulator stored through its own
// CreateImportSpec, ImportVApp and property collector:
//   - vcsim puts the PropertyMapping into ExtraConfig and never builds a VAppConfig; the
//     extension removes those ExtraConfig entries and, like vCenter, puts a VAppConfig into the
//     import spec: the ProductSections (product info, and each Property with its class,
//     instance, key, type, label, default and the PropertyMapping value of its full id
//     `class.key`) and the VirtualHardwareSection's ovf:transport list. vcsim's CreateVM
//     ignores a VAppConfig, so the pool's ImportVApp wrapper stores it on the created VM (as
//     VmConfigInfo) before returning the lease. A PropertyMapping key that names no property
//     of the descriptor is not stored and comes back as an import Warning.
//   - vcsim ignores vmw:ExtraConfig (govmomi 0.24's ovf package does not even parse it), which
//     vCenter transfers into the VM's configuration like the ConfigSpec's extraConfig: the
//     extension reads the VirtualHardwareSection's entries with encoding/xml and appends them to
//     the spec's ExtraConfig, which vcsim's CreateVM stores.
//   - vcsim gives each disk and CD-ROM the next free unit of its controller, ignoring
//     rasd:AddressOnParent: the extension sets the unit numbers from it, as vCenter does.
//   - vcsim 0.24 knows LSI Logic SAS only as "lsilogic-sas", not as the OVF subtype
//     "lsilogicsas" VMware's own exports write, and refuses the controller (fixed upstream in
//     govmomi pull request 3796): the extension hands vcsim the descriptor with that alias
//     applied. The SCSI controller check of such an OVF is marked as the extension's.
//
// Each check line says whose work it proves: [vcsim] what vcsim 0.24 itself built from the
// OVF and the options; [ext] what holds only because of the vCenter behaviour above (vcsim
// merely stored it); [options] the options file itself. The IDE controller the CD-ROM sits on
// is one vcsim adds next to the VM's default IDE 0 and 1, with a bus number of its own choice
// rather than the OVF's rasd:Address: the CD-ROM's parent's type is checked, not its bus, and
// the CD-ROM's unit is set from rasd:AddressOnParent but not checked (no expectation is given).
package main

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/nfc"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Options is govc 0.24's importx Options, the JSON of `govc import.spec` and `-options`.
type Options struct {
	AllDeploymentOptions []string `json:",omitempty"`
	Deployment           string   `json:",omitempty"`

	AllDiskProvisioningOptions []string `json:",omitempty"`
	DiskProvisioning           string

	AllIPAllocationPolicyOptions []string `json:",omitempty"`
	IPAllocationPolicy           string

	AllIPProtocolOptions []string `json:",omitempty"`
	IPProtocol           string

	PropertyMapping []Property `json:",omitempty"`

	NetworkMapping []Network `json:",omitempty"`

	Annotation string `json:",omitempty"`

	MarkAsTemplate bool
	PowerOn        bool
	InjectOvfEnv   bool
	WaitForIP      bool
	Name           *string
}

// Property is one PropertyMapping entry (govc's importx.Property: a KeyValue and, from
// `govc import.spec`, the OVF property it came from).
type Property struct {
	Key   string
	Value string
	Spec  *ovf.Property `json:",omitempty"`
}

// Network maps an OVF network name to an inventory network.
type Network struct {
	Name    string
	Network string
}

// multi is a repeatable flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// expectations are what the caller says the imported VM must be; nothing is assumed here.
type expectations struct {
	guestID         string
	hardwareVersion int
	cpus            int
	memoryMiB       int
	scsi            string
	nic             string
	disks           []expectedDisk
	extraConfig     []types.KeyValue
	transports      []string
	cdrom           bool
	properties      []types.KeyValue
}

type expectedDisk struct {
	unit  int32
	bytes int64
}

func main() {
	log.SetPrefix("vcsim: ")
	log.SetFlags(0)
	ovaPath := flag.String("ova", "", "the OVA to import")
	optionsPath := flag.String("options", "", "govc importx options file (JSON)")
	var e expectations
	flag.StringVar(&e.guestID, "guest-id", "", "expected config.guestId")
	flag.IntVar(&e.hardwareVersion, "hardware-version", 0, "expected virtual hardware version NN of config.version vmx-NN")
	flag.IntVar(&e.cpus, "cpus", 0, "expected number of virtual CPUs (0: not checked)")
	flag.IntVar(&e.memoryMiB, "memory-mib", 0, "expected memory in MiB (0: not checked)")
	flag.StringVar(&e.scsi, "scsi", "", "the OVF ResourceSubType of the expected SCSI controller (VirtualSCSI, lsilogic, lsilogicsas)")
	flag.StringVar(&e.nic, "nic", "", "the OVF ResourceSubType of the expected NIC (VmxNet3, E1000)")
	var disks, extra, props multi
	flag.Var(&disks, "disk", "UNIT=BYTES: a disk expected on the SCSI controller (repeat per disk)")
	flag.Var(&extra, "extra-config", "KEY=VALUE expected in config.extraConfig (repeatable)")
	flag.Var(&props, "property", "FULL_ID=VALUE the options must map and the VM's vApp property must hold (repeatable)")
	transports := flag.String("transports", "", "expected OVF environment transports, space-separated (empty: none)")
	flag.BoolVar(&e.cdrom, "cdrom", false, "expect a CD-ROM on an IDE controller")
	flag.Parse()

	usage := func(format string, a ...interface{}) {
		fmt.Fprintf(os.Stderr, "import_check: "+format+"\n", a...)
		flag.Usage()
		os.Exit(2)
	}
	if *ovaPath == "" || *optionsPath == "" || flag.NArg() != 0 {
		usage("-ova and -options are required, and nothing else")
	}
	if e.guestID == "" || e.hardwareVersion == 0 || e.scsi == "" || e.nic == "" || len(disks) == 0 {
		usage("-guest-id, -hardware-version, -scsi, -nic and at least one -disk are required")
	}
	for _, d := range disks {
		u, b, ok := strings.Cut(d, "=")
		unit, err1 := strconv.ParseInt(u, 10, 32)
		bytes, err2 := strconv.ParseInt(b, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			usage("-disk %q is not UNIT=BYTES", d)
		}
		e.disks = append(e.disks, expectedDisk{unit: int32(unit), bytes: bytes})
	}
	for _, kvs := range []struct {
		flag string
		in   multi
		out  *[]types.KeyValue
	}{{"-extra-config", extra, &e.extraConfig}, {"-property", props, &e.properties}} {
		for _, s := range kvs.in {
			k, v, ok := strings.Cut(s, "=")
			if !ok || k == "" {
				usage("%s %q is not KEY=VALUE", kvs.flag, s)
			}
			*kvs.out = append(*kvs.out, types.KeyValue{Key: k, Value: v})
		}
	}
	e.transports = strings.Fields(*transports)

	r := &report{out: os.Stdout}
	if err := run(r, *ovaPath, *optionsPath, &e); err != nil {
		r.fail("[import]", "import", "the OVA imports as govc imports it", err.Error())
	}
	fmt.Printf("%d checks, %d failed\n", r.checks, r.failed)
	if r.failed > 0 {
		os.Exit(1)
	}
}

// run imports the OVA into a fresh simulator and checks the VM; an error is an import that did
// not go through (the checks report themselves).
func run(r *report, ovaPath, optionsPath string, e *expectations) error {
	opts, err := readOptions(r, optionsPath)
	if err != nil {
		return err
	}
	archive := tapeArchive{path: ovaPath}
	descriptor, err := archive.descriptor()
	if err != nil {
		return err
	}
	env, err := ovf.Unmarshal(strings.NewReader(descriptor))
	if err != nil {
		return fmt.Errorf("failed to parse ovf: %v", err)
	}
	if env.VirtualSystem == nil || len(env.VirtualSystem.VirtualHardware) == 0 {
		return errors.New("the descriptor has no VirtualSystem with a VirtualHardwareSection")
	}

	ctx := context.Background()
	model := simulator.VPX()
	model.Machine = 0 // no VMs but the one imported
	defer model.Remove()
	if err := model.Create(); err != nil {
		return fmt.Errorf("cannot create the simulator's inventory: %v", err)
	}
	installVCenterBehaviour(model)
	model.Service.TLS = new(tls.Config) // the lease's device URLs are https, as on vCenter
	server := model.Service.NewServer()
	defer server.Close()
	client, err := govmomi.NewClient(ctx, server.URL, true)
	if err != nil {
		return fmt.Errorf("cannot log in to the simulator: %v", err)
	}
	defer func() { _ = client.Logout(ctx) }()

	vm, err := importOVA(ctx, client, archive, descriptor, env, opts)
	if err != nil {
		return err
	}
	return checkVM(ctx, r, client, vm, env, opts, e)
}

// readOptions reads the options file as govc does (unknown fields ignored) and reports, as a
// check, fields govc would silently ignore.
func readOptions(r *report, p string) (*Options, error) {
	text, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var opts Options
	if err := json.Unmarshal(text, &opts); err != nil {
		return nil, fmt.Errorf("%s is not a govc options file: %v", p, err)
	}
	strict := json.NewDecoder(strings.NewReader(string(text)))
	strict.DisallowUnknownFields()
	var again Options
	if err := strict.Decode(&again); err != nil {
		r.fail("[options]", "options file", "only fields govc's importx Options has", err.Error()+" (govc ignores it)")
	} else {
		r.pass("[options]", "options file", "fields govc's importx Options has")
	}
	return &opts, nil
}

// importOVA is govc 0.24's importx ovfx.Import, then its Deploy without power-on.
func importOVA(ctx context.Context, c *govmomi.Client, archive tapeArchive, descriptor string, env *ovf.Envelope, opts *Options) (*object.VirtualMachine, error) {
	finder := find.NewFinder(c.Client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return nil, err
	}
	finder.SetDatacenter(dc)
	ds, err := finder.DefaultDatastore(ctx)
	if err != nil {
		return nil, err
	}
	cluster, err := finder.DefaultClusterComputeResource(ctx)
	if err != nil {
		return nil, err
	}
	pool, err := cluster.ResourcePool(ctx)
	if err != nil {
		return nil, err
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, err
	}

	name := env.VirtualSystem.ID
	if env.VirtualSystem.Name != nil {
		name = *env.VirtualSystem.Name
	}
	if opts.Name != nil {
		name = *opts.Name
	}
	var nmap []types.OvfNetworkMapping
	for _, m := range opts.NetworkMapping {
		if m.Network == "" {
			continue // not set: vSphere chooses
		}
		net, err := finder.Network(ctx, m.Network)
		if err != nil {
			return nil, fmt.Errorf("NetworkMapping %q -> %q: %v", m.Name, m.Network, err)
		}
		nmap = append(nmap, types.OvfNetworkMapping{Name: m.Name, Network: net.Reference()})
	}
	var pmap []types.KeyValue
	for _, p := range opts.PropertyMapping {
		pmap = append(pmap, types.KeyValue{Key: p.Key, Value: p.Value})
	}
	cisp := types.OvfCreateImportSpecParams{
		DiskProvisioning:   opts.DiskProvisioning,
		EntityName:         name,
		IpAllocationPolicy: opts.IPAllocationPolicy,
		IpProtocol:         opts.IPProtocol,
		OvfManagerCommonParams: types.OvfManagerCommonParams{
			DeploymentOption: opts.Deployment,
			Locale:           "US",
		},
		PropertyMapping: pmap,
		NetworkMapping:  nmap,
	}
	m := ovf.NewManager(c.Client)
	spec, err := m.CreateImportSpec(ctx, descriptor, pool, ds, cisp)
	if err != nil {
		return nil, err
	}
	for _, w := range spec.Warning {
		fmt.Printf("Warning: %s\n", w.LocalizedMessage)
	}
	if len(spec.Error) != 0 {
		var msgs []string
		for _, e := range spec.Error {
			msgs = append(msgs, e.LocalizedMessage)
		}
		return nil, fmt.Errorf("CreateImportSpec: %s", strings.Join(msgs, "; "))
	}
	if opts.Annotation != "" {
		if s, ok := spec.ImportSpec.(*types.VirtualMachineImportSpec); ok {
			s.ConfigSpec.Annotation = opts.Annotation
		}
	}

	lease, err := pool.ImportVApp(ctx, spec.ImportSpec, folders.VmFolder, nil)
	if err != nil {
		return nil, fmt.Errorf("ImportVApp: %v", err)
	}
	info, err := lease.Wait(ctx, spec.FileItem)
	if err != nil {
		return nil, fmt.Errorf("HttpNfcLease: %v", err)
	}
	if len(info.Items) != len(spec.FileItem) {
		return nil, fmt.Errorf("the lease offers %d device URLs for the import spec's %d file items", len(info.Items), len(spec.FileItem))
	}
	updater := lease.StartUpdater(ctx, info)
	for _, item := range info.Items {
		if err := upload(ctx, archive, lease, item); err != nil {
			updater.Done()
			return nil, fmt.Errorf("uploading %s: %v", item.Path, err)
		}
		fmt.Printf("uploaded %s (%d bytes) to %s\n", item.Path, item.Size, item.DeviceId)
	}
	updater.Done()
	if err := lease.Complete(ctx); err != nil {
		return nil, fmt.Errorf("completing the lease: %v", err)
	}

	vm := object.NewVirtualMachine(c.Client, info.Entity)
	if opts.MarkAsTemplate {
		if err := vm.MarkAsTemplate(ctx); err != nil {
			return nil, fmt.Errorf("MarkAsTemplate: %v", err)
		}
	}
	return vm, nil
}

// tapeArchive reads members of an OVA (a tar) by name, as govc's importx.TapeArchive does.
type tapeArchive struct {
	path string
}

// open returns the first member matching the glob `pattern`, its name and size.
func (a tapeArchive) open(pattern string) (io.ReadCloser, string, int64, error) {
	f, err := os.Open(a.path)
	if err != nil {
		return nil, "", 0, err
	}
	t := tar.NewReader(f)
	for {
		h, err := t.Next()
		if err != nil {
			_ = f.Close()
			if err == io.EOF {
				return nil, "", 0, fmt.Errorf("%s has no member %s", a.path, pattern)
			}
			return nil, "", 0, fmt.Errorf("reading %s: %v", a.path, err)
		}
		if ok, _ := path.Match(pattern, h.Name); ok {
			return struct {
				io.Reader
				io.Closer
			}{t, f}, h.Name, h.Size, nil
		}
	}
}

func (a tapeArchive) descriptor() (string, error) {
	r, _, _, err := a.open("*.ovf")
	if err != nil {
		return "", err
	}
	defer r.Close()
	text, err := io.ReadAll(r)
	return string(text), err
}

// upload sends one OVA member to its device URL (govc's ovfx.Upload).
func upload(ctx context.Context, archive tapeArchive, lease *nfc.Lease, item nfc.FileItem) error {
	r, _, size, err := archive.open(item.Path)
	if err != nil {
		return err
	}
	defer r.Close()
	return lease.Upload(ctx, item, r, soap.Upload{ContentLength: size})
}
