// The vCenter behaviour vcsim 0.24 lacks, added by wrapping two of its managed objects (the
// OvfManager and the resource pools) as simulator/example_extend_test.go shows: what vCenter's
// CreateImportSpec puts into an import spec and its ImportVApp into the VM, for the parts of an
// OVF vcsim ignores. The header comment of import_check.go says which checks rest on it.

package main

import (
	"encoding/xml"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// extended records what the wrappers added to vcsim's work in this process's import, so that
// each check can say whose work it proves. The simulator calls the wrappers on its server's
// goroutines, hence the lock.
var extended struct {
	sync.Mutex
	scsiAliases []string // OVF SCSI subtypes vcsim was handed under another name
	units       int      // disk and CD-ROM unit numbers taken from rasd:AddressOnParent
	extraConfig int      // vmw:ExtraConfig entries carried into the spec
	vAppConfig  bool     // a VAppConfig was put into the spec and stored on the VM
}

// installVCenterBehaviour replaces the model's OvfManager and resource pools (by the same
// references) with the wrappers below. Call after model.Create.
func installVCenterBehaviour(model *simulator.Model) {
	ref := *model.ServiceContent.OvfManager
	if m, ok := simulator.Map.Get(ref).(*simulator.OvfManager); ok {
		simulator.Map.Put(&vcenterOvfManager{OvfManager: *m})
	}
	for _, e := range simulator.Map.All("ResourcePool") {
		if p, ok := e.(*simulator.ResourcePool); ok {
			simulator.Map.Put(&vcenterResourcePool{ResourcePool: *p})
		}
	}
}

// vcenterOvfManager is vcsim's OvfManager with vCenter's handling of what vcsim ignores. (Embedded
// by value: vcsim's property collector finds the managed object through the first field.)
type vcenterOvfManager struct {
	simulator.OvfManager
}

// CreateImportSpec lets vcsim build the spec (from the descriptor with vcsim's missing SCSI
// alias applied), then, as vCenter does: moves the PropertyMapping from ExtraConfig into a
// VAppConfig with the ProductSections and the transports, adds vmw:ExtraConfig, and gives
// disks and CD-ROMs the units of their rasd:AddressOnParent.
func (m *vcenterOvfManager) CreateImportSpec(ctx *simulator.Context, req *types.CreateImportSpec) soap.HasFault {
	env, err := ovf.Unmarshal(strings.NewReader(req.OvfDescriptor))
	if err != nil || env.VirtualSystem == nil || len(env.VirtualSystem.VirtualHardware) == 0 {
		return m.OvfManager.CreateImportSpec(ctx, req) // vcsim's own answer to what it cannot read
	}
	extraConfig, err := vmwExtraConfig(req.OvfDescriptor)
	if err != nil {
		body := new(methods.CreateImportSpecBody)
		body.Fault_ = simulator.Fault(err.Error(), &types.InvalidArgument{InvalidProperty: "ovfDescriptor"})
		return body
	}
	forVcsim := *req
	var aliases []string
	forVcsim.OvfDescriptor, aliases = aliasSCSISubtypes(req.OvfDescriptor)
	body := m.OvfManager.CreateImportSpec(ctx, &forVcsim)
	res, ok := body.(*methods.CreateImportSpecBody)
	if !ok || res.Res == nil {
		return body
	}
	result := &res.Res.Returnval
	spec, ok := result.ImportSpec.(*types.VirtualMachineImportSpec)
	if !ok || len(result.Error) != 0 {
		return body
	}
	cs := &spec.ConfigSpec

	mapped := map[string]bool{}
	for _, p := range req.Cisp.PropertyMapping {
		mapped[p.Key] = true
	}
	var kept []types.BaseOptionValue
	for _, o := range cs.ExtraConfig {
		if !mapped[o.GetOptionValue().Key] {
			kept = append(kept, o)
		}
	}
	cs.ExtraConfig = kept
	for _, kv := range extraConfig {
		cs.ExtraConfig = append(cs.ExtraConfig, &types.OptionValue{Key: kv.Key, Value: kv.Value})
	}

	units, err := unitsFromAddressOnParent(env, forVcsim.Cisp.DeploymentOption, cs.DeviceChange)
	if err != nil {
		result.Error = append(result.Error, types.LocalizedMethodFault{
			Fault:            &types.InvalidArgument{InvalidProperty: "ovfDescriptor"},
			LocalizedMessage: err.Error(),
		})
		return body
	}

	vapp, unknown := vAppConfigSpec(env, req.Cisp.PropertyMapping)
	if vapp != nil {
		cs.VAppConfig = vapp
	}
	for _, key := range unknown {
		result.Warning = append(result.Warning, types.LocalizedMethodFault{
			Fault:            &types.InvalidArgument{InvalidProperty: "cisp.propertyMapping"},
			LocalizedMessage: fmt.Sprintf("PropertyMapping %q names no property of the descriptor's ProductSections", key),
		})
	}

	extended.Lock()
	extended.scsiAliases = aliases
	extended.units = units
	extended.extraConfig = len(extraConfig)
	extended.vAppConfig = vapp != nil
	extended.Unlock()
	return body
}

// vmwExtraConfig reads the `vmw:ExtraConfig` entries of the (first) VirtualHardwareSection,
// which govmomi 0.24's ovf package does not parse.
func vmwExtraConfig(descriptor string) ([]types.KeyValue, error) {
	const ns = "http://www.vmware.com/schema/ovf"
	var d struct {
		VirtualSystem struct {
			VirtualHardware []struct {
				ExtraConfig []struct {
					Key   string `xml:"http://www.vmware.com/schema/ovf key,attr"`
					Value string `xml:"http://www.vmware.com/schema/ovf value,attr"`
				} `xml:"http://www.vmware.com/schema/ovf ExtraConfig"`
			} `xml:"VirtualHardwareSection"`
		} `xml:"VirtualSystem"`
	}
	if err := xml.Unmarshal([]byte(descriptor), &d); err != nil {
		return nil, fmt.Errorf("cannot read the descriptor's %s ExtraConfig: %v", ns, err)
	}
	var kvs []types.KeyValue
	if hw := d.VirtualSystem.VirtualHardware; len(hw) != 0 {
		for _, e := range hw[0].ExtraConfig {
			if e.Key == "" {
				return nil, fmt.Errorf("a vmw:ExtraConfig has no vmw:key")
			}
			kvs = append(kvs, types.KeyValue{Key: e.Key, Value: e.Value})
		}
	}
	return kvs, nil
}

// The OVF subtype of LSI Logic SAS that VMware's exports write, which vcsim 0.24's
// CreateSCSIController does not know (it knows "lsilogic-sas"; govmomi pull request 3796).
var lsiLogicSAS = regexp.MustCompile(`(<(?:[A-Za-z_][\w.-]*:)?ResourceSubType>)\s*(?i:lsilogicsas)\s*(</(?:[A-Za-z_][\w.-]*:)?ResourceSubType>)`)

// aliasSCSISubtypes returns the descriptor with vcsim's name for the controllers it does not
// know under their OVF name, and the OVF names it replaced.
func aliasSCSISubtypes(descriptor string) (string, []string) {
	var replaced []string
	out := lsiLogicSAS.ReplaceAllStringFunc(descriptor, func(m string) string {
		replaced = append(replaced, "lsilogicsas")
		return lsiLogicSAS.ReplaceAllString(m, "${1}lsilogic-sas${2}")
	})
	return out, replaced
}

// unitsFromAddressOnParent sets the unit number of each disk and CD-ROM in vcsim's device
// changes from its Item's rasd:AddressOnParent. vcsim appends devices in Item order and skips
// the same Items it skips here (another deployment option, an unknown parent), so the n-th
// disk (CD-ROM) change is the n-th disk (CD-ROM) Item. Returns how many units it set.
func unitsFromAddressOnParent(env *ovf.Envelope, option string, changes []types.BaseVirtualDeviceConfigSpec) (int, error) {
	parents := map[string]bool{}
	var disks, cdroms []*string
	for _, item := range env.VirtualSystem.VirtualHardware[0].Item {
		if option != "" && item.Configuration != nil && *item.Configuration != option {
			continue
		}
		if item.ResourceType == nil {
			continue
		}
		switch *item.ResourceType {
		case 5, 6, 14: // IDE, SCSI, floppy: what vcsim keeps as a parent
			parents[item.InstanceID] = true
		case 15, 17:
			if item.Parent == nil || !parents[*item.Parent] {
				continue
			}
			if *item.ResourceType == 15 {
				cdroms = append(cdroms, item.AddressOnParent)
			} else {
				disks = append(disks, item.AddressOnParent)
			}
		}
	}
	set := 0
	var nd, nc int
	for _, c := range changes {
		var addr *string
		switch c.GetVirtualDeviceConfigSpec().Device.(type) {
		case *types.VirtualDisk:
			if nd >= len(disks) {
				return 0, fmt.Errorf("vcsim made more disks than the descriptor has disk Items")
			}
			addr = disks[nd]
			nd++
		case *types.VirtualCdrom:
			if nc >= len(cdroms) {
				return 0, fmt.Errorf("vcsim made more CD-ROMs than the descriptor has CD-ROM Items")
			}
			addr = cdroms[nc]
			nc++
		default:
			continue
		}
		if addr == nil {
			continue // no address: the next free unit, as vcsim chose
		}
		unit, err := strconv.ParseInt(strings.TrimSpace(*addr), 10, 32)
		if err != nil || unit < 0 {
			return 0, fmt.Errorf("rasd:AddressOnParent %q is not a unit number", *addr)
		}
		u := int32(unit)
		c.GetVirtualDeviceConfigSpec().Device.GetVirtualDevice().UnitNumber = &u
		set++
	}
	if nd != len(disks) || nc != len(cdroms) {
		return 0, fmt.Errorf("vcsim made %d disks and %d CD-ROMs of %d disk and %d CD-ROM Items", nd, nc, len(disks), len(cdroms))
	}
	return set, nil
}

// propertyID is a property's full id, the key of the PropertyMapping and of the OVF
// environment: `class.key.instance` without the empty parts.
func propertyID(class, key, instance string) string {
	id := key
	if class != "" {
		id = class + "." + id
	}
	if instance != "" {
		id += "." + instance
	}
	return id
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// vAppConfigSpec is the VAppConfig vCenter builds from the descriptor: each ProductSection's
// product and properties (with the PropertyMapping's value for the property's full id) and the
// VirtualHardwareSection's transports. Nil when the descriptor has neither. Also returns the
// PropertyMapping keys that name no property.
func vAppConfigSpec(env *ovf.Envelope, mapping []types.KeyValue) (*types.VmConfigSpec, []string) {
	values := map[string]string{}
	for _, kv := range mapping {
		values[kv.Key] = kv.Value
	}
	used := map[string]bool{}
	add := types.ArrayUpdateSpec{Operation: types.ArrayUpdateOperationAdd}
	spec := &types.VmConfigSpec{}
	for i, p := range env.VirtualSystem.Product {
		class, instance := deref(p.Class), deref(p.Instance)
		spec.Product = append(spec.Product, types.VAppProductSpec{
			ArrayUpdateSpec: add,
			Info: &types.VAppProductInfo{
				Key:         int32(i),
				ClassId:     class,
				InstanceId:  instance,
				Name:        p.Product,
				Vendor:      p.Vendor,
				Version:     p.Version,
				FullVersion: p.FullVersion,
				VendorUrl:   p.VendorURL,
				ProductUrl:  p.ProductURL,
				AppUrl:      p.AppURL,
			},
		})
		for _, prop := range p.Property {
			id := propertyID(class, prop.Key, instance)
			info := &types.VAppPropertyInfo{
				Key:              int32(len(spec.Property)),
				ClassId:          class,
				InstanceId:       instance,
				Id:               prop.Key,
				Label:            deref(prop.Label),
				Type:             prop.Type,
				UserConfigurable: prop.UserConfigurable,
				DefaultValue:     deref(prop.Default),
				Description:      deref(prop.Description),
			}
			if v, ok := values[id]; ok {
				info.Value = v
				used[id] = true
			}
			spec.Property = append(spec.Property, types.VAppPropertySpec{ArrayUpdateSpec: add, Info: info})
		}
	}
	if t := env.VirtualSystem.VirtualHardware[0].Transport; t != nil {
		spec.OvfEnvironmentTransport = strings.Fields(*t)
	}
	var unknown []string
	for _, kv := range mapping {
		if !used[kv.Key] {
			unknown = append(unknown, kv.Key)
		}
	}
	if len(spec.Product) == 0 && len(spec.OvfEnvironmentTransport) == 0 {
		return nil, unknown
	}
	return spec, unknown
}

// vcenterResourcePool is vcsim's resource pool whose ImportVApp, like vCenter's, gives the
// created VM the import spec's VAppConfig (vcsim's CreateVM ignores it).
type vcenterResourcePool struct {
	simulator.ResourcePool
}

// ImportVApp lets vcsim import, then stores the spec's VAppConfig on the VM as its
// config.vAppConfig.
func (p *vcenterResourcePool) ImportVApp(ctx *simulator.Context, req *types.ImportVApp) soap.HasFault {
	var vapp *types.VmConfigSpec
	if spec, ok := req.Spec.(*types.VirtualMachineImportSpec); ok && spec.ConfigSpec.VAppConfig != nil {
		vapp = spec.ConfigSpec.VAppConfig.GetVmConfigSpec()
	}
	body := p.ResourcePool.ImportVApp(ctx, req)
	res, ok := body.(*methods.ImportVAppBody)
	if !ok || res.Res == nil || vapp == nil {
		return body
	}
	lease, ok := ctx.Session.Get(res.Res.Returnval).(*simulator.HttpNfcLease)
	if !ok {
		return body
	}
	vm, ok := ctx.Map.Get(lease.Info.Entity).(*simulator.VirtualMachine)
	if !ok {
		return body
	}
	info := vmConfigInfo(vapp)
	ctx.WithLock(vm, func() {
		ctx.Map.Update(vm, []types.PropertyChange{{Name: "config.vAppConfig", Val: info}})
		if vm.Config.VAppConfig == nil { // not a path the registry updates: set it directly
			vm.Config.VAppConfig = info
		}
	})
	return body
}

// vmConfigInfo is what a VM holds of the VmConfigSpec it was created with.
func vmConfigInfo(s *types.VmConfigSpec) *types.VmConfigInfo {
	info := &types.VmConfigInfo{
		Eula:                    s.Eula,
		OvfEnvironmentTransport: s.OvfEnvironmentTransport,
		InstallBootStopDelay:    s.InstallBootStopDelay,
	}
	if s.InstallBootRequired != nil {
		info.InstallBootRequired = *s.InstallBootRequired
	}
	if s.IpAssignment != nil {
		info.IpAssignment = *s.IpAssignment
	}
	for _, p := range s.Product {
		if p.Operation == types.ArrayUpdateOperationAdd && p.Info != nil {
			info.Product = append(info.Product, *p.Info)
		}
	}
	for _, p := range s.Property {
		if p.Operation == types.ArrayUpdateOperationAdd && p.Info != nil {
			info.Property = append(info.Property, *p.Info)
		}
	}
	return info
}
