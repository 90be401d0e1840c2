import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { MamoriError } from '../core/mamori-error.js';

export interface OvfDiskRef {
  /** File name inside the OVA / beside the .ovf (References/File ovf:href). */
  href: string;
  capacityBytes: number;
  /** Size of the file itself when the descriptor says (File ovf:size). */
  fileSizeBytes?: number;
}

/** `model` as in rasd:ResourceSubType ('E1000', 'VmxNet3', 'virtio'); `network` '' for a NIC connected to nothing. */
export interface OvfNic {
  model: string;
  network: string;
}

export interface OvfVirtualSystem {
  name: string;
  vcpus: number;
  memoryMiB: number;
  firmware: 'uefi' | 'bios';
  /** Guest OS as the descriptor names it (OperatingSystemSection: ovf:id and Description / vmw:osType) */
  os?: { cimId: number; description?: string; vmwOsType?: string };
  /** Disks in the order the VM attaches them (the first is the boot disk). */
  disks: OvfDiskRef[];
  nics: OvfNic[];
  /** What parseOvf had to assume because the descriptor did not say; absent when nothing. */
  warnings?: string[];
}

const STREAM_VMDK = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';
const CONTROLLER_ID = 3;
/** lsilogic: 16 units, of which unit 7 is the controller's own, so a disk there is refused by vSphere. */
const SCSI_UNITS = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15];

const invalid = (message: string): MamoriError => new MamoriError('INVALID_INPUT', message);
const corrupt = (message: string, cause?: unknown): MamoriError =>
  new MamoriError('IMAGE_CORRUPT', message, cause === undefined ? {} : { cause });
const unsupported = (message: string): MamoriError => new MamoriError('IMAGE_FORMAT_UNSUPPORTED', message);

// ---------------------------------------------------------------- building

/** XML 1.0 cannot carry C0 controls at all, and attribute values would lose tabs and newlines. */
const BAD_CHARS = /[\u0000-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };
const esc = (v: string): string => v.replace(/[&<>"']/g, (c) => ESCAPES[c]!);

type Attrs = Record<string, string | number | undefined>;
function el(name: string, attrs: Attrs, body?: string | number | string[]): string {
  const a = Object.entries(attrs)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${esc(String(v))}"`)
    .join('');
  if (body === undefined || (Array.isArray(body) && body.length === 0)) return `<${name}${a}/>`;
  if (!Array.isArray(body)) return `<${name}${a}>${esc(String(body))}</${name}>`;
  return `<${name}${a}>\n${body.join('\n').replace(/^/gm, '  ')}\n</${name}>`;
}

/** The OVF 1.0 schema declares rasd/vssd children as an alphabetical xs:sequence, and ovftool validates it. */
const settings = (tag: string, prefix: string, fields: Record<string, string | number>): string =>
  el(
    tag,
    {},
    Object.keys(fields)
      .sort()
      .map((k) => el(`${prefix}:${k}`, {}, fields[k]!)),
  );

function checkSystem(vs: OvfVirtualSystem): void {
  const text = (what: string, v: unknown, allowEmpty = false): void => {
    if (typeof v !== 'string' || (!allowEmpty && v === '') || BAD_CHARS.test(v))
      throw invalid(`${what} must be a ${allowEmpty ? '' : 'non-empty '}string without control characters`);
  };
  const count = (what: string, v: unknown): void => {
    if (!Number.isSafeInteger(v) || (v as number) < 1)
      throw invalid(`${what} must be a whole number of at least 1, not ${String(v)}`);
  };
  text('the VM name', vs.name);
  count('vcpus', vs.vcpus);
  count('memoryMiB', vs.memoryMiB);
  if (vs.firmware !== 'uefi' && vs.firmware !== 'bios')
    throw invalid(`firmware must be 'uefi' or 'bios', not ${String(vs.firmware)}`);
  if (vs.os !== undefined) {
    if (!Number.isSafeInteger(vs.os.cimId) || vs.os.cimId < 0)
      throw invalid('os.cimId must be a CIM operating system number such as 101 (Linux 64-Bit)');
    if (vs.os.description !== undefined) text('os.description', vs.os.description);
    if (vs.os.vmwOsType !== undefined) text('os.vmwOsType', vs.os.vmwOsType);
  }
  if (vs.disks.length === 0) throw invalid('a VM needs at least one disk to be exported');
  if (vs.disks.length > SCSI_UNITS.length)
    throw invalid(`one SCSI controller takes at most ${SCSI_UNITS.length} disks; this VM has ${vs.disks.length}`);
  const hrefs = new Set<string>();
  for (const d of vs.disks) {
    text('a disk href', d.href);
    if (hrefs.has(d.href)) throw invalid(`two disks share the file name ${d.href}; give each disk its own file`);
    hrefs.add(d.href);
    count(`the capacity of ${d.href}`, d.capacityBytes);
    if (d.fileSizeBytes !== undefined && (!Number.isSafeInteger(d.fileSizeBytes) || d.fileSizeBytes < 0))
      throw invalid(`the file size of ${d.href} must be a whole number of bytes`);
  }
  for (const n of vs.nics) {
    text('a NIC model', n.model);
    text('a NIC network', n.network, true);
  }
}

/** An OVF 1.0 envelope as VMware ovftool and vSphere's "Deploy OVF template" import it. */
export function buildOvf(vs: OvfVirtualSystem): string {
  checkSystem(vs);
  const os = vs.os ?? { cimId: 101, description: 'Linux 64-Bit', vmwOsType: 'otherLinux64Guest' };
  const networks = [...new Set(vs.nics.map((n) => n.network).filter((n) => n !== ''))];
  let instance = CONTROLLER_ID + 1;
  const items = [
    settings('Item', 'rasd', {
      AllocationUnits: 'hertz * 10^6',
      Description: 'Number of Virtual CPUs',
      ElementName: `${vs.vcpus} virtual CPU(s)`,
      InstanceID: 1,
      ResourceType: 3,
      VirtualQuantity: vs.vcpus,
    }),
    settings('Item', 'rasd', {
      AllocationUnits: 'byte * 2^20',
      Description: 'Memory Size',
      ElementName: `${vs.memoryMiB}MB of memory`,
      InstanceID: 2,
      ResourceType: 4,
      VirtualQuantity: vs.memoryMiB,
    }),
    settings('Item', 'rasd', {
      Address: 0,
      Description: 'SCSI Controller',
      ElementName: 'SCSI controller 0',
      InstanceID: CONTROLLER_ID,
      ResourceSubType: 'lsilogic',
      ResourceType: 6,
    }),
    ...vs.disks.map((_, i) =>
      settings('Item', 'rasd', {
        AddressOnParent: SCSI_UNITS[i]!,
        ElementName: `Hard disk ${i + 1}`,
        HostResource: `ovf:/disk/vmdisk${i + 1}`,
        InstanceID: instance++,
        Parent: CONTROLLER_ID,
        ResourceType: 17,
      }),
    ),
    ...vs.nics.map((n, i) =>
      settings('Item', 'rasd', {
        AutomaticAllocation: 'true',
        ...(n.network === '' ? {} : { Connection: n.network }),
        ElementName: `Network adapter ${i + 1}`,
        InstanceID: instance++,
        ResourceSubType: n.model,
        ResourceType: 10,
      }),
    ),
  ];
  if (vs.firmware === 'uefi')
    items.push(el('vmw:Config', { 'ovf:required': 'false', 'vmw:key': 'firmware', 'vmw:value': 'efi' }));
  const envelope = el(
    'Envelope',
    {
      'ovf:version': '1.0',
      xmlns: 'http://schemas.dmtf.org/ovf/envelope/1',
      'xmlns:ovf': 'http://schemas.dmtf.org/ovf/envelope/1',
      'xmlns:rasd': 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData',
      'xmlns:vssd': 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData',
      'xmlns:vmw': 'http://www.vmware.com/schema/ovf',
      'xmlns:xsi': 'http://www.w3.org/2001/XMLSchema-instance',
    },
    [
      el(
        'References',
        {},
        vs.disks.map((d, i) =>
          el('File', { 'ovf:href': d.href, 'ovf:id': `file${i + 1}`, 'ovf:size': d.fileSizeBytes }),
        ),
      ),
      el('DiskSection', {}, [
        el('Info', {}, 'Virtual disk information'),
        ...vs.disks.map((d, i) =>
          el('Disk', {
            'ovf:capacity': d.capacityBytes,
            'ovf:capacityAllocationUnits': 'byte',
            'ovf:diskId': `vmdisk${i + 1}`,
            'ovf:fileRef': `file${i + 1}`,
            'ovf:format': STREAM_VMDK,
          }),
        ),
      ]),
      ...(networks.length === 0
        ? []
        : [
            el('NetworkSection', {}, [
              el('Info', {}, 'The list of logical networks'),
              ...networks.map((n) => el('Network', { 'ovf:name': n }, [el('Description', {}, `The ${n} network`)])),
            ]),
          ]),
      el('VirtualSystem', { 'ovf:id': vs.name }, [
        el('Info', {}, 'A virtual machine'),
        el('Name', {}, vs.name),
        el('OperatingSystemSection', { 'ovf:id': os.cimId, 'vmw:osType': os.vmwOsType }, [
          el('Info', {}, 'The kind of installed guest operating system'),
          ...(os.description === undefined ? [] : [el('Description', {}, os.description)]),
        ]),
        el('VirtualHardwareSection', {}, [
          el('Info', {}, 'Virtual hardware requirements'),
          settings('System', 'vssd', {
            ElementName: 'Virtual Hardware Family',
            InstanceID: 0,
            VirtualSystemIdentifier: vs.name,
            VirtualSystemType: 'vmx-13',
          }),
          ...items,
        ]),
      ]),
    ],
  );
  return `<?xml version="1.0" encoding="UTF-8"?>\n${envelope}\n`;
}

// ---------------------------------------------------------------- parsing

/** An element by its local name: producers disagree on prefixes (ovf:, none, default namespace, rasd/sasd/epasd). */
interface XNode {
  name: string;
  attrs: Record<string, string>;
  children: XNode[];
  text: string;
}

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  removeNSPrefix: true,
  parseTagValue: false,
  parseAttributeValue: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  htmlEntities: true, // htmlEntities: numeric references (&#10;)
});

function toTree(raw: unknown[]): XNode[] {
  const out: XNode[] = [];
  for (const entry of raw as Record<string, unknown>[]) {
    for (const [name, value] of Object.entries(entry)) {
      if (name === ':@' || name === '#text' || !Array.isArray(value)) continue;
      const text = (value as Record<string, unknown>[])
        .filter((c) => '#text' in c)
        .map((c) => String(c['#text']))
        .join('');
      out.push({ name, attrs: (entry[':@'] ?? {}) as Record<string, string>, children: toTree(value), text });
    }
  }
  return out;
}

const kids = (n: XNode | undefined, name: string): XNode[] => n?.children.filter((c) => c.name === name) ?? [];
const textOf = (n: XNode | undefined, name: string): string | undefined => kids(n, name)[0]?.text.trim();
/** OVF 0.9 and old VirtualBox write `<Section xsi:type="ovf:DiskSection_Type">` for `<DiskSection>`. */
const sections = (n: XNode, kind: string): XNode[] =>
  n.children.filter((c) => c.name === kind || (c.name === 'Section' && (c.attrs.type ?? '').endsWith(`${kind}_Type`)));
const whole = (s: string | undefined): number | undefined => {
  if (s === undefined || !/^\d+$/.test(s.trim())) return undefined;
  // Past 2^53 a number no longer says which one it is: no real size or count is that large.
  const n = Number(s.trim());
  if (!Number.isSafeInteger(n))
    throw corrupt(
      `the descriptor holds the number ${s.trim().slice(0, 40)}, too large to be a real size or count; the descriptor is damaged: export the VM again`,
    );
  return n;
};

/** Bytes per unit for DMTF programmatic units ("byte * 2^20") and the names producers use instead ("MegaBytes"). */
function unitBytes(units: string): number | undefined {
  const u = units.replace(/\s+/g, '').toLowerCase();
  const m = /^bytes?(?:\*(\d+)(?:\^(\d+))?)?$/.exec(u);
  if (m !== null) return m[1] === undefined ? 1 : Number(m[1]) ** Number(m[2] ?? 1);
  const binary: Record<string, number> = {
    b: 0,
    kb: 10,
    kib: 10,
    kilobytes: 10,
    mb: 20,
    mib: 20,
    megabytes: 20,
    gb: 30,
    gib: 30,
    gigabytes: 30,
    tb: 40,
    tib: 40,
    terabytes: 40,
  };
  // Own keys only: "constructor" is no unit.
  return Object.hasOwn(binary, u) ? 2 ** binary[u]! : undefined;
}

/** Reads one VM from an OVF 1.x/2.0 descriptor written by ovftool, vSphere, VirtualBox or others. */
export function parseOvf(xml: string): OvfVirtualSystem {
  if (typeof xml !== 'string') throw invalid('parseOvf takes the text of the .ovf descriptor');
  const body = xml.replace(/^\uFEFF/, ''); // Windows producers may start with a byte order mark
  const check = XMLValidator.validate(body);
  if (check !== true)
    throw corrupt(
      `the OVF descriptor is not well-formed XML (line ${check.err.line}: ${check.err.msg}); check the .ovf file was copied whole, or export the VM again`,
    );
  let roots: XNode[];
  try {
    roots = toTree(parser.parse(body) as unknown[]);
  } catch (cause) {
    throw corrupt(
      'the OVF descriptor could not be read as XML; check the .ovf file was copied whole, or export the VM again',
      cause,
    );
  }
  const env = roots[0];
  if (env?.name !== 'Envelope')
    throw corrupt(
      `this XML is not an OVF descriptor (its root is <${env?.name ?? 'nothing'}>, not <Envelope>); give the .ovf file of the export`,
    );
  if (kids(env, 'VirtualSystemCollection').length > 0)
    throw unsupported(
      'this OVF holds a vApp (VirtualSystemCollection) of several VMs; convert one VM at a time: export it alone',
    );
  const systems = kids(env, 'VirtualSystem');
  if (systems.length > 1)
    throw unsupported(`this OVF holds ${systems.length} VMs; convert one VM at a time: export it alone`);
  const vs = systems[0];
  if (vs === undefined)
    throw corrupt('the OVF descriptor has no VirtualSystem: there is no VM in it; export the VM again');
  const warnings: string[] = [];

  const files = new Map<string, { href: string; size?: number }>();
  for (const f of sections(env, 'References').flatMap((r) => kids(r, 'File'))) {
    const id = f.attrs.id ?? '',
      href = f.attrs.href ?? '',
      size = whole(f.attrs.size);
    if (f.attrs.compression !== undefined && f.attrs.compression !== 'identity')
      throw unsupported(
        `file ${href} is ${f.attrs.compression}-compressed, which cannot be read in place; export the VM again without compression`,
      );
    if (f.attrs.chunkSize !== undefined)
      throw unsupported(`file ${href} is split in chunks; export the VM again without --chunkSize`);
    files.set(id, size === undefined ? { href } : { href, size });
  }
  const diskDefs = new Map<string, { fileRef?: string; capacityBytes: number }>();
  for (const d of sections(env, 'DiskSection').flatMap((s) => kids(s, 'Disk'))) {
    const id = d.attrs.diskId ?? '';
    const capacity = whole(d.attrs.capacity),
      unit = unitBytes(d.attrs.capacityAllocationUnits ?? 'byte');
    if (capacity === undefined || unit === undefined)
      throw corrupt(
        `disk ${id} has no readable capacity (${d.attrs.capacity ?? 'none'} ${d.attrs.capacityAllocationUnits ?? ''}); export the VM again`,
      );
    const capacityBytes = capacity * unit;
    if (!Number.isSafeInteger(capacityBytes))
      throw corrupt(
        `disk ${id} claims ${d.attrs.capacity} × ${d.attrs.capacityAllocationUnits ?? 'byte'} bytes, more than any disk holds; the descriptor is damaged: export the VM again`,
      );
    diskDefs.set(id, { ...(d.attrs.fileRef === undefined ? {} : { fileRef: d.attrs.fileRef }), capacityBytes });
  }

  // Items may be tagged for one of several deployment configurations; take the default one's.
  const configs = sections(env, 'DeploymentOptionSection').flatMap((s) => kids(s, 'Configuration'));
  const chosen = (configs.find((c) => c.attrs.default === 'true') ?? configs[0])?.attrs.id;
  const hardware = sections(vs, 'VirtualHardwareSection');
  if (hardware.length > 1)
    warnings.push(`the descriptor has ${hardware.length} VirtualHardwareSections; the first was used`);
  const items = (hardware[0]?.children ?? [])
    .filter((c) => ['Item', 'StorageItem', 'EthernetPortItem'].includes(c.name))
    .filter(
      (c) =>
        c.attrs.configuration === undefined ||
        (chosen !== undefined && c.attrs.configuration.split(/\s+/).includes(chosen)),
    )
    .filter((c) => c.attrs.bound === undefined || c.attrs.bound === 'normal')
    .map((c, index) => ({ index, type: whole(textOf(c, 'ResourceType')), get: (k: string) => textOf(c, k) }));

  const quantity = (type: number, what: string): { qty?: number; units?: string } => {
    const item = items.find((i) => i.type === type);
    const qty = whole(item?.get('VirtualQuantity'));
    if (qty === undefined || qty < 1) {
      warnings.push(`the descriptor gives no ${what}`);
      return {};
    }
    const units = item?.get('AllocationUnits') ?? item?.get('VirtualQuantityUnits');
    return units === undefined ? { qty } : { qty, units };
  };
  const cpu = quantity(3, 'number of vCPUs; 1 assumed');
  const mem = quantity(4, 'memory size; 1024 MiB assumed');
  let memoryMiB = 1024;
  if (mem.qty !== undefined) {
    if (mem.units === undefined) warnings.push('the memory size has no AllocationUnits; MiB assumed');
    const unit = unitBytes(mem.units ?? 'byte * 2^20');
    if (unit === undefined)
      throw unsupported(
        `memory AllocationUnits "${mem.units}" are not understood; set the VM's memory in megabytes and export it again`,
      );
    memoryMiB = Math.ceil((mem.qty * unit) / 2 ** 20);
    if (!Number.isSafeInteger(memoryMiB))
      throw corrupt(
        `the memory size ${mem.qty} × ${mem.units ?? 'byte * 2^20'} is more than any machine has; the descriptor is damaged: export the VM again`,
      );
  }

  // Disks in the order the guest sees them: by controller (in item order), then by address on it.
  const position = new Map(
    items.flatMap((i) => {
      const id = i.get('InstanceID');
      return id === undefined ? [] : [[id, i.index] as const];
    }),
  );
  const diskItems = items
    .filter((i) => i.type !== 14 && i.type !== 15 && i.type !== 16) // floppy, CD and DVD drives
    .map((i) => ({ i, diskId: /^(?:ovf:)?\/+disk\/(.+)$/.exec(i.get('HostResource') ?? '')?.[1] }))
    .filter((d): d is { i: (typeof items)[number]; diskId: string } => d.diskId !== undefined)
    .map((d) => ({
      ...d,
      ctrl: position.get(d.i.get('Parent') ?? '') ?? Infinity,
      addr: whole(d.i.get('AddressOnParent')) ?? Infinity,
    }))
    .sort((a, b) => a.ctrl - b.ctrl || a.addr - b.addr || a.i.index - b.i.index);
  const order = [...new Set(diskItems.map((d) => d.diskId))];
  for (const id of diskDefs.keys()) {
    if (!order.includes(id)) {
      warnings.push(`disk ${id} is attached to no controller; it was put after the attached ones`);
      order.push(id);
    }
  }
  const disks = order.map((id): OvfDiskRef => {
    const def = diskDefs.get(id);
    if (def === undefined)
      throw corrupt(
        `the hardware refers to disk ${id}, which the DiskSection does not list; the descriptor is damaged: export the VM again`,
      );
    if (def.fileRef === undefined)
      throw unsupported(
        `disk ${id} is a blank disk with no file; remove it from the VM or write to it, then export again`,
      );
    const file = files.get(def.fileRef);
    if (file === undefined)
      throw corrupt(
        `disk ${id} refers to file ${def.fileRef}, which References does not list; the descriptor is damaged: export the VM again`,
      );
    return file.size === undefined
      ? { href: file.href, capacityBytes: def.capacityBytes }
      : { href: file.href, capacityBytes: def.capacityBytes, fileSizeBytes: file.size };
  });
  if (disks.length === 0)
    throw corrupt(
      'the OVF descriptor lists no virtual disk, so there is nothing to convert; export the VM with its disks',
    );

  const nics = items
    .filter((i) => i.type === 10)
    .map((i): OvfNic => {
      const model = i.get('ResourceSubType');
      if (model === undefined)
        warnings.push(`network adapter ${i.get('InstanceID') ?? ''} has no ResourceSubType; E1000 assumed`);
      return { model: model ?? 'E1000', network: i.get('Connection') ?? '' };
    });

  const osNode = sections(vs, 'OperatingSystemSection')[0];
  const cimId = whole(osNode?.attrs.id);
  const description = textOf(osNode, 'Description');
  const os =
    cimId === undefined
      ? undefined
      : {
          cimId,
          ...(description === undefined ? {} : { description }),
          ...(osNode?.attrs.osType === undefined ? {} : { vmwOsType: osNode.attrs.osType }),
        };

  // vSphere: <vmw:Config vmw:key="firmware" vmw:value="efi"/>; VirtualBox: <Firmware type="EFI"/> in vbox:Machine.
  const isEfi = (n: XNode): boolean =>
    (n.name.toLowerCase() === 'firmware' && /efi/i.test([n.text, ...Object.values(n.attrs)].join(' '))) ||
    ((n.attrs.key ?? '').toLowerCase() === 'firmware' && /efi/i.test(n.attrs.value ?? '')) ||
    n.children.some(isEfi);

  let name = textOf(vs, 'Name') || vs.attrs.id || textOf(kids(hardware[0], 'System')[0], 'VirtualSystemIdentifier');
  if (!name) {
    warnings.push('the descriptor names no VM; "imported-vm" assumed');
    name = 'imported-vm';
  }
  return {
    name,
    vcpus: cpu.qty ?? 1,
    memoryMiB,
    firmware: isEfi(vs) ? 'uefi' : 'bios',
    ...(os === undefined ? {} : { os }),
    disks,
    nics,
    ...(warnings.length === 0 ? {} : { warnings }),
  };
}
