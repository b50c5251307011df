//! The OVF descriptor: valid against the DMTF schema for every base, controller, NIC and vSphere
//! target, and parsing it back gives the definition's values (no golden file).

use crate::support;

use appliance::definition::{
    Base, DeployProperty, NicKind, ScsiController, VsphereCompat, DEPLOY_PRODUCT_CLASS,
};
use appliance::ovf::{
    self, BuildInfo, ControllerKind, DiskFile, DiskRole, OvfDescriptor, DISK_ENABLE_UUID,
    NETWORK_NAME, STREAM_OPTIMIZED_FORMAT,
};
use appliance::Definition;
use support::*;

fn disk_files(def: &Definition) -> Vec<DiskFile> {
    DiskRole::ALL
        .iter()
        .enumerate()
        .map(|(i, &role)| DiskFile {
            role,
            file_size: 70_656 + 512 * i as u64,
            capacity: role.capacity(def),
            populated_size: 65_536 * (3 - i as u64),
        })
        .collect()
}

/// Parses `xml` back and checks every value against the definition and the disk files.
fn assert_agrees(def: &Definition, disks: &[DiskFile], build: &BuildInfo, xml: &str) {
    let d = OvfDescriptor::parse(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let compat = def.appliance.vsphere_compat;
    let (guest, cim) = compat.guest_os(def.appliance.base);
    assert_eq!(d.virtual_system_id, def.appliance.name);
    assert_eq!(d.name.as_deref(), Some(def.appliance.name.as_str()));
    assert_eq!(d.os.cim_id, cim);
    assert_eq!(d.os.vmw_os_type.as_deref(), Some(guest));
    assert_eq!(
        d.hardware_families,
        vec![format!("vmx-{:02}", def.hardware_version())]
    );
    assert_eq!(d.vmx_versions(), vec![def.hardware_version()]);
    assert_eq!(d.cpus, def.hardware.vcpus);
    assert_eq!(d.memory_bytes, def.hardware.memory.bytes());
    let scsi: Vec<_> = d.scsi_controllers().collect();
    assert_eq!(scsi.len(), 1);
    assert_eq!(scsi[0].kind, ControllerKind::Scsi);
    assert_eq!(
        scsi[0].subtype.as_deref(),
        Some(def.hardware.scsi_controller.ovf_subtype())
    );
    assert_eq!(d.nics.len(), 1);
    assert_eq!(
        d.nics[0].subtype.as_deref(),
        Some(def.hardware.nic.ovf_subtype())
    );
    assert_eq!(d.nics[0].connection.as_deref(), Some(NETWORK_NAME));
    assert_eq!(d.networks, vec![NETWORK_NAME.to_string()]);
    assert_eq!(d.files.len(), 2);
    assert_eq!(d.disks.len(), 2);
    for (i, role) in DiskRole::ALL.into_iter().enumerate() {
        let want = disks.iter().find(|f| f.role == role).unwrap();
        let f = &d.files[i];
        assert_eq!(
            f.href,
            role.file_name(def),
            "References order follows DiskRole::ALL"
        );
        assert_eq!(f.size, Some(want.file_size));
        assert_eq!(f.compression, None);
        let disk = d
            .disks
            .iter()
            .find(|x| x.href.as_deref() == Some(&f.href))
            .unwrap();
        assert_eq!(disk.capacity_bytes, role.capacity(def));
        assert_eq!(disk.populated_size, Some(want.populated_size));
        assert_eq!(disk.file_size, Some(want.file_size));
        assert_eq!(disk.format.as_deref(), Some(STREAM_OPTIMIZED_FORMAT));
        let a = disk.attachment.as_ref().expect("every disk is attached");
        assert_eq!(a.controller_instance, scsi[0].instance_id);
        assert_eq!(a.unit, Some(role.scsi_unit(def)));
    }
    assert_eq!(d.extra_config(DISK_ENABLE_UUID), Some("TRUE"));
    assert_eq!(d.extra_config.len(), 1, "only disk.EnableUUID");
    assert_eq!(d.config("firmware"), Some("bios"));
    assert!(
        !d.config_before_items,
        "vmw:Config/ExtraConfig come after the Items"
    );
    assert_eq!(d.boot_order_section, None);
    assert_eq!(d.virtualbox_section, None);
    let product = d.product.as_ref().expect("a ProductSection");
    assert_eq!(
        product.product.as_deref(),
        Some(def.appliance.name.as_str())
    );
    assert_eq!(
        product.version.as_deref(),
        Some(def.appliance.version.as_str())
    );
    assert_eq!(
        product.full_version.as_deref(),
        Some(format!("{} build {}", def.appliance.version, build.build_id).as_str())
    );
    if def.deploy.properties {
        assert_eq!(product.class.as_deref(), Some(DEPLOY_PRODUCT_CLASS));
        assert_eq!(d.transports, ["com.vmware.guestInfo", "iso"]);
        let keys: Vec<&str> = product.properties.iter().map(|p| p.key.as_str()).collect();
        let want: Vec<&str> = DeployProperty::ALL.iter().map(|p| p.key()).collect();
        assert_eq!(keys, want);
        for (p, got) in DeployProperty::ALL.iter().zip(&product.properties) {
            assert!(got.user_configurable, "{}", got.key);
            assert_eq!(got.password, p.is_password(), "{}", got.key);
            assert_eq!(got.value.as_deref(), Some(p.default_value(def).as_str()));
            assert_eq!(got.label.as_deref(), Some(p.label()));
            assert_eq!(got.description.as_deref(), Some(p.description()));
            assert_eq!(got.qualifiers.as_deref(), p.qualifiers());
        }
        let passphrase = product.properties.iter().find(|p| p.password).unwrap();
        assert_eq!(passphrase.key, "agent_passphrase");
        assert_eq!(passphrase.value.as_deref(), Some(""), "no baked-in secret");
        let ip = product
            .properties
            .iter()
            .find(|p| p.key == "ip_address")
            .unwrap();
        assert_eq!(ip.vmw_qualifiers.as_deref(), Some("Ip"));
        let prefix = product
            .properties
            .iter()
            .find(|p| p.key == "ip_prefix")
            .unwrap();
        assert_eq!(prefix.ovf_type, "uint8");
    } else {
        assert!(product.properties.is_empty());
        assert!(d.transports.is_empty());
    }
    let annotation = d.annotation.as_deref().expect("an AnnotationSection");
    assert!(annotation.contains(&def.appliance.version) && annotation.contains(&build.build_id));
}

fn check(def: &Definition, name: &str) {
    let build = BuildInfo {
        build_id: "20261126.1".into(),
    };
    let disks = disk_files(def);
    let xml = ovf::render(def, &disks, &build).unwrap();
    let dir = scratch(&format!("ovf-{name}"));
    let path = dir.join(format!("{}.ovf", def.appliance.name));
    std::fs::write(&path, &xml).unwrap();
    assert_schema_valid(&path);
    assert_agrees(def, &disks, &build, &xml);
}

#[test]
fn every_base_controller_and_nic_gives_a_schema_valid_descriptor_that_parses_back() {
    for base in [Base::Debian12, Base::Centos6] {
        for scsi in [
            ScsiController::Paravirtual,
            ScsiController::Lsilogic,
            ScsiController::LsilogicSas,
        ] {
            for nic in [NicKind::Vmxnet3, NicKind::E1000] {
                let def = variant(base, scsi, nic, VsphereCompat::V6_7);
                check(
                    &def,
                    &format!("{base}-{}-{}", scsi.ovf_subtype(), nic.ovf_subtype()),
                );
            }
        }
    }
}

#[test]
fn every_vsphere_target_picks_its_hardware_version_and_guest_id() {
    for compat in VsphereCompat::ALL {
        for base in [Base::Debian12, Base::Centos6] {
            let def = variant(base, ScsiController::Paravirtual, NicKind::Vmxnet3, compat);
            assert_eq!(def.hardware_version(), compat.max_hardware_version());
            check(&def, &format!("compat-{}-{base}", compat.as_str()));
        }
    }
}

#[test]
fn the_retention_disk_sits_at_its_configured_scsi_unit() {
    let mut def = default_definition();
    def.retention_disk.scsi_unit = 9;
    assert!(def.validate().is_empty());
    check(&def, "unit9");
}

#[test]
fn deploy_properties_of_a_static_build_are_schema_valid_and_can_be_left_out() {
    let mut def = default_definition();
    def.network.mode = appliance::definition::NetworkMode::Static;
    def.network.address = Some("192.168.10.20".parse().unwrap());
    def.network.prefix = Some(24);
    def.network.gateway = Some("192.168.10.1".parse().unwrap());
    def.network.dns = vec!["192.168.10.2".parse().unwrap()];
    def.deploy.dns_search = Some("dr.example.com".into());
    assert!(def.validate().is_empty(), "{:?}", def.validate());
    check(&def, "deploy-static");
    def.deploy.properties = false;
    check(&def, "deploy-none");
}

#[test]
fn xml_special_characters_in_values_are_escaped() {
    let mut def = default_definition();
    def.appliance.version = r#"1.0<&"'>"#.into();
    assert!(def.validate().is_empty(), "{:?}", def.validate());
    let build = BuildInfo {
        build_id: r#"b<1>&"2"'3'"#.into(),
    };
    let disks = disk_files(&def);
    let xml = ovf::render(&def, &disks, &build).unwrap();
    assert!(!xml.contains(r#"1.0<&"#), "raw markup leaked into the XML");
    let dir = scratch("ovf-escaping");
    let path = dir.join("escaped.ovf");
    std::fs::write(&path, &xml).unwrap();
    assert_schema_valid(&path);
    assert_agrees(&def, &disks, &build, &xml);
}

#[test]
fn a_disk_whose_capacity_differs_from_the_definition_is_refused() {
    let def = default_definition();
    let mut disks = disk_files(&def);
    disks[1].capacity += 512;
    let err = ovf::render(
        &def,
        &disks,
        &BuildInfo {
            build_id: "x".into(),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("retention"), "{err}");
    let err = ovf::render(
        &def,
        &disks[..1],
        &BuildInfo {
            build_id: "x".into(),
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("retention disk file, got 0"),
        "{err}"
    );
}

#[test]
fn parse_errors_name_the_byte_offset() {
    let err = OvfDescriptor::parse(
        "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\">\n  <References>\n</Envelope>",
    )
    .unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert!(err.message.contains("not well-formed"), "{err}");
    let err = OvfDescriptor::parse("<?xml version=\"1.0\"?>\n<Envelope/>").unwrap_err();
    assert_eq!(err.offset, 22, "{err}");
    assert!(err.message.contains("not an OVF Envelope"), "{err}");
}

#[test]
fn a_foreign_descriptor_with_mib_units_and_a_vmx_list_parses() {
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References><File ovf:href="a.vmdk" ovf:id="f1" ovf:size="1024"/></References>
  <DiskSection><Info>d</Info><Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="d1" ovf:fileRef="f1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>x</Info>
    <OperatingSystemSection ovf:id="101"><Info>o</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>h</Info>
      <System><vssd:ElementName>f</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-11 vmx-13</vssd:VirtualSystemType></System>
      <vmw:ExtraConfig vmw:key="disk.enableUUID" vmw:value="true"/>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>5</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#;
    let d = OvfDescriptor::parse(xml).unwrap();
    assert_eq!(d.vmx_versions(), vec![11, 13]);
    assert_eq!(d.cpus, 4);
    assert_eq!(d.memory_bytes, 1 << 30);
    assert_eq!(d.disks[0].capacity_bytes, 16 << 20);
    assert_eq!(d.disks[0].attachment.as_ref().unwrap().unit, Some(0));
    assert_eq!(d.os.vmw_os_type, None);
    assert!(d.config_before_items);
    assert_eq!(d.extra_config("disk.enableUUID"), Some("true"));
}

#[test]
fn the_schema_check_catches_rasd_children_out_of_order() {
    let def = default_definition();
    let xml = ovf::render(
        &def,
        &disk_files(&def),
        &BuildInfo {
            build_id: "x".into(),
        },
    )
    .unwrap();
    let a = "<rasd:ElementName>Hard Disk 1 (OS)</rasd:ElementName>";
    let b = "<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>";
    let swapped = xml.replace(a, "@A@").replace(b, a).replace("@A@", b);
    assert_ne!(swapped, xml);
    let dir = scratch("ovf-swapped");
    let path = dir.join("swapped.ovf");
    std::fs::write(&path, swapped).unwrap();
    let out = schema_check(&path).expect_err("xmllint must reject RASD children out of order");
    assert!(out.contains("HostResource"), "{out}");
}
