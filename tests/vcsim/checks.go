// The checks of the imported VM, read back through the simulator's property collector, each
// against an expectation from the command line or the options file; one line per check.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// report prints one line per check and counts the failures.
type report struct {
	out            io.Writer
	checks, failed int
}

func (r *report) pass(source, field, found string) {
	r.checks++
	fmt.Fprintf(r.out, "ok   %s %s: %s\n", source, field, found)
}

func (r *report) fail(source, field, expected, found string) {
	r.checks++
	r.failed++
	fmt.Fprintf(r.out, "FAIL %s %s: expected %s, found %s\n", source, field, expected, found)
}

func (r *report) equal(source, field, expected, found string) {
	if expected == found {
		r.pass(source, field, found)
	} else {
		r.fail(source, field, expected, found)
	}
}

// The device vSphere creates for an OVF rasd:ResourceSubType (compared in lower case).
var scsiDevices = map[string]string{
	"virtualscsi": "ParaVirtualSCSIController",
	"lsilogic":    "VirtualLsiLogicController",
	"lsilogicsas": "VirtualLsiLogicSASController",
	"buslogic":    "VirtualBusLogicController",
}

var nicDevices = map[string]string{
	"vmxnet3": "VirtualVmxnet3",
	"e1000":   "VirtualE1000",
	"e1000e":  "VirtualE1000e",
	"pcnet32": "VirtualPCNet32",
}

func typeName(d interface{}) string {
	t := reflect.TypeOf(d)
	if t == nil {
		return "nothing"
	}
	if t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	return t.Name()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// entityName is the VM name govc gives the import: the options' Name, else the
// VirtualSystem's Name, else its id.
func entityName(env *ovf.Envelope, opts *Options) string {
	if opts.Name != nil {
		return *opts.Name
	}
	if env.VirtualSystem.Name != nil {
		return *env.VirtualSystem.Name
	}
	return env.VirtualSystem.ID
}

// checkVM reads the VM back and checks it; an error is a VM that cannot be read.
func checkVM(ctx context.Context, r *report, c *govmomi.Client, vmObj *object.VirtualMachine, env *ovf.Envelope, opts *Options, e *expectations) error {
	var vm mo.VirtualMachine
	pc := property.DefaultCollector(c.Client)
	if err := pc.RetrieveOne(ctx, vmObj.Reference(), []string{"name", "config"}, &vm); err != nil {
		return fmt.Errorf("reading the VM back: %v", err)
	}
	if vm.Config == nil {
		return errors.New("the imported VM has no config")
	}
	cfg := vm.Config
	extended.Lock()
	ext := struct {
		scsiAliases []string
		units       int
		vAppConfig  bool
	}{extended.scsiAliases, extended.units, extended.vAppConfig}
	extended.Unlock()

	r.equal("[vcsim]", "name", entityName(env, opts), vm.Name)
	r.equal("[vcsim]", "config.guestId", e.guestID, cfg.GuestId)
	r.equal("[vcsim]", "config.version", fmt.Sprintf("vmx-%02d", e.hardwareVersion), cfg.Version)
	if e.cpus != 0 {
		r.equal("[vcsim]", "config.hardware.numCPU", strconv.Itoa(e.cpus), strconv.Itoa(int(cfg.Hardware.NumCPU)))
	}
	if e.memoryMiB != 0 {
		r.equal("[vcsim]", "config.hardware.memoryMB", strconv.Itoa(e.memoryMiB), strconv.Itoa(int(cfg.Hardware.MemoryMB)))
	}
	r.check("[vcsim]", "config.template", fmt.Sprintf("%t (options MarkAsTemplate)", opts.MarkAsTemplate),
		strconv.FormatBool(cfg.Template), cfg.Template == opts.MarkAsTemplate)

	devices := object.VirtualDeviceList(cfg.Hardware.Device)
	checkDisks(r, devices, e, ext.scsiAliases, ext.units)
	if err := checkNIC(ctx, r, c, devices, env, opts, e); err != nil {
		return err
	}
	checkCdrom(r, devices, e)
	checkExtraConfig(r, cfg, e)
	checkVAppConfig(r, cfg, env, opts, e, ext.vAppConfig)
	return nil
}

// checkDisks: one SCSI controller of the expected model, and on it exactly the expected disks,
// each at its unit with its capacity.
func checkDisks(r *report, devices object.VirtualDeviceList, e *expectations, aliases []string, units int) {
	want, known := scsiDevices[strings.ToLower(e.scsi)]
	if !known {
		want = "a controller for the OVF subtype " + e.scsi
	}
	var scsi []types.BaseVirtualDevice
	var found []string
	for _, d := range devices {
		if _, ok := d.(types.BaseVirtualSCSIController); ok {
			scsi = append(scsi, d)
			found = append(found, typeName(d))
		}
	}
	source := "[vcsim]"
	if len(aliases) != 0 {
		source = fmt.Sprintf("[ext: vcsim was handed %q as lsilogic-sas]", aliases[0])
	}
	field := fmt.Sprintf("devices.scsiController (OVF %s)", e.scsi)
	r.check(source, field, "one "+want, orNone(strings.Join(found, ", ")), len(scsi) == 1 && found[0] == want)
	if len(scsi) != 1 {
		return
	}
	ctrl := scsi[0].GetVirtualDevice()

	onController := map[int32]*types.VirtualDisk{}
	var elsewhere []string
	for _, d := range devices {
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		if disk.ControllerKey != ctrl.Key || disk.UnitNumber == nil {
			elsewhere = append(elsewhere, devices.Name(d))
			continue
		}
		onController[*disk.UnitNumber] = disk
	}
	var unitsFound []string
	for u := range onController {
		unitsFound = append(unitsFound, strconv.Itoa(int(u)))
	}
	sort.Strings(unitsFound)
	r.check("[vcsim]", "devices.disks", fmt.Sprintf("%d on the SCSI controller, none elsewhere", len(e.disks)),
		fmt.Sprintf("%d on the SCSI controller (units %s), %s elsewhere", len(onController), orNone(strings.Join(unitsFound, " ")), orNone(strings.Join(elsewhere, " "))),
		len(onController) == len(e.disks) && len(elsewhere) == 0)

	placement := "[vcsim]"
	if units != 0 {
		placement = "[ext: units from rasd:AddressOnParent]"
	}
	for _, want := range e.disks {
		field := fmt.Sprintf("devices.disk[SCSI unit %d]", want.unit)
		disk, ok := onController[want.unit]
		if !ok {
			r.fail(placement, field, "a disk", "none")
			continue
		}
		r.pass(placement, field, devices.Name(disk))
		capacity := disk.CapacityInBytes
		if capacity == 0 {
			capacity = disk.CapacityInKB * 1024
		}
		r.equal("[vcsim]", field+".capacity", fmt.Sprintf("%d bytes", want.bytes), fmt.Sprintf("%d bytes", capacity))
	}
}

// checkNIC: one NIC of the expected model, on the network the options map the OVF's network to.
func checkNIC(ctx context.Context, r *report, c *govmomi.Client, devices object.VirtualDeviceList, env *ovf.Envelope, opts *Options, e *expectations) error {
	want, known := nicDevices[strings.ToLower(e.nic)]
	if !known {
		want = "a NIC for the OVF subtype " + e.nic
	}
	var nics []types.BaseVirtualEthernetCard
	var found []string
	for _, d := range devices {
		if n, ok := d.(types.BaseVirtualEthernetCard); ok {
			nics = append(nics, n)
			found = append(found, typeName(d))
		}
	}
	r.check("[vcsim]", fmt.Sprintf("devices.nic (OVF %s)", e.nic), "one "+want, orNone(strings.Join(found, ", ")), len(nics) == 1 && found[0] == want)
	if len(nics) != 1 {
		return nil
	}

	ovfNetwork := ""
	for _, item := range env.VirtualSystem.VirtualHardware[0].Item {
		if item.ResourceType != nil && *item.ResourceType == 10 && len(item.Connection) != 0 {
			ovfNetwork = item.Connection[0]
			break
		}
	}
	mapped := ""
	for _, m := range opts.NetworkMapping {
		if m.Name == ovfNetwork && m.Network != "" {
			mapped = m.Network
		}
	}
	field := "devices.nic.network"
	if mapped == "" {
		r.fail("[options]", field, fmt.Sprintf("a NetworkMapping for the OVF network %q", ovfNetwork), "none")
		return nil
	}
	finder := find.NewFinder(c.Client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc)
	net, err := finder.Network(ctx, mapped)
	if err != nil {
		return fmt.Errorf("finding the mapped network %q: %v", mapped, err)
	}
	ref := net.Reference()
	expected := fmt.Sprintf("%s (%s, mapped from the OVF's %q)", mapped, ref, ovfNetwork)
	switch b := nics[0].GetVirtualEthernetCard().Backing.(type) {
	case *types.VirtualEthernetCardNetworkBackingInfo:
		foundRef := "no network"
		if b.Network != nil {
			foundRef = b.Network.String()
		}
		found := fmt.Sprintf("%s (%s)", b.DeviceName, foundRef)
		r.check("[vcsim]", field, expected, found, b.Network != nil && *b.Network == ref)
	case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
		found := fmt.Sprintf("distributed port group key %q", b.Port.PortgroupKey)
		var pg mo.DistributedVirtualPortgroup
		ok := ref.Type == "DistributedVirtualPortgroup" &&
			property.DefaultCollector(c.Client).RetrieveOne(ctx, ref, []string{"key"}, &pg) == nil &&
			pg.Key == b.Port.PortgroupKey
		if ok {
			found = fmt.Sprintf("%s (%s, %s)", mapped, ref, found)
		}
		r.check("[vcsim]", field, expected, found, ok)
	default:
		r.fail("[vcsim]", field, expected, fmt.Sprintf("a %s backing", typeName(b)))
	}
	return nil
}

func (r *report) check(source, field, expected, found string, ok bool) {
	if ok {
		r.pass(source, field, found)
	} else {
		r.fail(source, field, expected, found)
	}
}

// checkCdrom: a CD-ROM on an IDE controller when expected, none otherwise.
func checkCdrom(r *report, devices object.VirtualDeviceList, e *expectations) {
	var found []string
	onIDE := 0
	for _, d := range devices {
		cd, ok := d.(*types.VirtualCdrom)
		if !ok {
			continue
		}
		parent := devices.FindByKey(cd.ControllerKey)
		if _, ide := parent.(*types.VirtualIDEController); ide {
			onIDE++
		}
		found = append(found, fmt.Sprintf("VirtualCdrom on %s", typeName(parent)))
	}
	expected := "no VirtualCdrom"
	ok := len(found) == 0
	if e.cdrom {
		expected = "one VirtualCdrom on a VirtualIDEController"
		ok = len(found) == 1 && onIDE == 1
	}
	if len(found) == 0 {
		found = []string{"no VirtualCdrom"}
	}
	r.check("[vcsim]", "devices.cdrom", expected, strings.Join(found, ", "), ok)
}

// checkExtraConfig: each expected key with its value.
func checkExtraConfig(r *report, cfg *types.VirtualMachineConfigInfo, e *expectations) {
	for _, want := range e.extraConfig {
		found := "no such key"
		for _, o := range cfg.ExtraConfig {
			if v := o.GetOptionValue(); v.Key == want.Key {
				found = fmt.Sprint(v.Value)
			}
		}
		r.equal("[ext: vmw:ExtraConfig carried into the spec]", "config.extraConfig["+want.Key+"]", want.Value, found)
	}
}

// checkVAppConfig: the transports, and every PropertyMapping value of the options (and every
// value the caller set) on the VM's vApp properties.
func checkVAppConfig(r *report, cfg *types.VirtualMachineConfigInfo, env *ovf.Envelope, opts *Options, e *expectations, built bool) {
	source := "[ext: vcsim builds no VAppConfig]"
	password := map[string]bool{}
	for _, p := range env.VirtualSystem.Product {
		for _, prop := range p.Property {
			password[propertyID(deref(p.Class), prop.Key, deref(p.Instance))] = prop.Password != nil && *prop.Password
		}
	}
	show := func(id, v string) string {
		if password[id] && v != "" {
			return fmt.Sprintf("(a password of %d characters)", len(v))
		}
		return strconv.Quote(v)
	}

	mapped := map[string]string{}
	for _, p := range opts.PropertyMapping {
		mapped[p.Key] = p.Value
	}
	for _, want := range e.properties {
		found := "not mapped"
		if v, ok := mapped[want.Key]; ok {
			found = show(want.Key, v)
		}
		r.equal("[options]", "PropertyMapping["+want.Key+"]", show(want.Key, want.Value), found)
	}

	var info *types.VmConfigInfo
	if cfg.VAppConfig != nil {
		info = cfg.VAppConfig.GetVmConfigInfo()
	}
	if info == nil {
		what := "the descriptor's ProductSections and transports"
		if !built {
			what += " (the extension built none: the descriptor has neither)"
		}
		r.fail(source, "config.vAppConfig", what, "none")
		return
	}
	r.equal(source, "config.vAppConfig.ovfEnvironmentTransport", orNone(strings.Join(e.transports, " ")),
		orNone(strings.Join(info.OvfEnvironmentTransport, " ")))
	props := map[string]types.VAppPropertyInfo{}
	for _, p := range info.Property {
		props[propertyID(p.ClassId, p.Id, p.InstanceId)] = p
	}
	for _, p := range opts.PropertyMapping {
		field := "config.vAppConfig.property[" + p.Key + "]"
		got, ok := props[p.Key]
		if !ok {
			r.fail(source, field, show(p.Key, p.Value)+" (options PropertyMapping)", "no such property")
			continue
		}
		r.check(source, field, show(p.Key, p.Value)+" (options PropertyMapping)", show(p.Key, got.Value), got.Value == p.Value)
	}
}
