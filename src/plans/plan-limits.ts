/**
 * How big a recovery plan may be. Plans arrive over the API from anyone holding the admin
 * token, and parsing one must not stall the site server (issue 18: a 0.9 MB plan blocked
 * /health for 104 s), so every dimension that costs time or memory is bounded. The figures
 * sit well above real plans (VMware SRM allows 2,000 VMs per plan and 250 protection groups);
 * a plan over one is refused with PLAN_TOO_LARGE, whose message names the limit.
 */
export const PLAN_LIMITS = {
  /** Bytes of plan text (UTF-8). The API's body limit for POST /plans follows from it. */
  bytes: 256 * 1024,
  /**
   * Values in the document (mappings, lists, keys, scalars), aliases counted each time they
   * are used: this is what stops an alias bomb, whose text is small.
   */
  nodes: 50_000,
  /** Aliases (`*name`) in one plan. */
  aliases: 500,
  /** Nesting of mappings and lists; a plan needs 5 (vms, a VM, recoveryIp, dns, an address). */
  depth: 16,
  /** Characters of any one text value or key (names have their own, shorter rule). */
  textChars: 4096,
  vms: 2000,
  protectionGroups: 250,
  protectedVms: 2000,
  steps: 200,
  /** Names in one VM's dependsOn. */
  dependsOnPerVm: 64,
  /** dependsOn entries over all VMs. */
  dependencies: 10_000,
  /** VMs in one chain of dependencies within a priority: each waits for the one before. */
  dependencyChain: 100,
  /** Arguments of one step's command. */
  commandArgs: 64,
  /** DNS servers of one IP customization. */
  dnsServers: 8,
} as const;

/** The API's JSON body for a plan: the text, JSON-escaped (a newline becomes two bytes), in an object. */
export const PLAN_BODY_LIMIT = 2 * PLAN_LIMITS.bytes + 4096;
