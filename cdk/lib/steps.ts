// The eight runbook steps and the least privilege each one gets: one table, read by the stack (and
// by the README's least-privilege table). Every statement says why its resource and condition are
// what they are; where IAM allows no resource narrower than "*", `why` says so, and it is also the
// written justification of the cdk-nag acknowledgement for that wildcard.
//
// Resource types and condition keys are the ones the Service Authorization Reference lists for
// each action (https://docs.aws.amazon.com/service-authorization/latest/reference/):
//   - list_amazonec2.html: the ec2:Describe* actions used here have no resource type (only
//     ec2:Region); DescribeInstanceAttribute, GetConsoleOutput, GetConsoleScreenshot,
//     ModifyInstanceAttribute and the IAM-instance-profile actions take `instance`;
//     CreateSnapshots takes instance*, volume*, snapshot*; CreateSnapshot volume*, snapshot*;
//     CreateSecurityGroup security-group* (aws:RequestTag) and vpc; the security-group rule
//     actions security-group* (aws:ResourceTag); ModifyNetworkInterfaceAttribute
//     network-interface*, instance, security-group, subnet (the connection-tracking timeouts are
//     set with the same action); CreateNetworkAclEntry network-acl* (aws:ResourceTag,
//     ec2:NetworkAclID, ec2:Vpc); DescribeInstanceTypes and DescribeNetworkAcls no resource
//     type; CreateTags supports ec2:CreateAction
//     and aws:TagKeys; AssociateIamInstanceProfile supports ec2:NewInstanceProfile;
//     StopInstances and ModifyInstanceMetadataOptions take instance* (aws:ResourceTag).
//   - list_awssystemsmanager.html: SendCommand takes document*, instance, managed-instance and
//     bucket (the output bucket, which Cordon no longer names: the output goes to presigned URLs);
//     DescribeInstanceInformation, ListCommands, GetCommandInvocation and CancelCommand take no
//     resource; UpdateInstanceInformation takes instance and managed-instance
//     (ec2:SourceInstanceARN, ssm:SourceInstanceARN).
//   - list_ssmmessages.html (Amazon Message Gateway Service) and list_ec2messages.html (Amazon
//     Message Delivery Service): no action of either service has a resource type, so "*" is the
//     only valid Resource; CreateControlChannel, GetMessages and SendReply take
//     ec2:SourceInstanceARN.
//   - list_amazonec2.html, the collection path: DescribePrefixLists and DescribeVpcEndpoints have
//     no resource type; DeleteNetworkAclEntry takes network-acl* (aws:ResourceTag,
//     ec2:NetworkAclID, ec2:Vpc), like CreateNetworkAclEntry.
//   - list_amazonec2autoscaling.html / list_awselasticloadbalancingv2.html: the Describe* actions
//     take no resource; DetachInstances takes autoScalingGroup*, DeregisterTargets targetgroup*.
//   - list_awsidentityandaccessmanagementiam.html: GetInstanceProfile takes instance-profile*,
//     ListRolePolicies/GetRolePolicy/PutRolePolicy role* (no condition key names the inline policy), PassRole
//     role* with iam:PassedToService.
//   - list_amazons3.html: PutObject/GetObject take object, ListBucket bucket; s3:if-none-match
//     filters on the If-None-Match header.

import { Aws } from 'aws-cdk-lib';

export type StepName =
  | 'metadata'
  | 'screenshot'
  | 'snapshot'
  | 'termprotect'
  | 'detach-profile'
  | 'ssm-collect'
  | 'quarantine'
  | 'notify';

/** ARNs that the statements are scoped to, known only once the stack's resources exist. */
export interface ScopeArns {
  readonly evidenceBucketArn: string;
  readonly evidenceKeyArn: string;
  readonly topicArn: string;
  readonly topicKeyArn: string;
  readonly forensicRoleArn: string;
  readonly forensicInstanceProfileArn: string;
  /** `arn:...:execution:<state machine name>:*`: the executions of Cordon's state machine. */
  readonly executionsArn: string;
  /** The evidence retention (S3 Object Lock default retention), also the snapshot lock. */
  readonly retentionMode?: 'GOVERNANCE' | 'COMPLIANCE';
  readonly retentionDays?: number;
  /** The deployment's collection budget and the most a request may ask for (lib/config.ts). */
  readonly collectionBudgetSeconds?: number;
  readonly collectionMaxBudgetSeconds?: number;
}

export interface StepStatement {
  readonly sid: string;
  readonly effect?: 'Allow' | 'Deny';
  readonly actions: readonly string[];
  readonly resources: readonly string[];
  readonly conditions?: Record<string, Record<string, unknown>>;
  /** Why this access, and why this scope. */
  readonly why: string;
}

export interface StepDefinition {
  readonly name: StepName;
  /** Cargo package and binary; cargo lambda writes it to `target/lambda/<binary>/bootstrap`. */
  readonly binary: string;
  /** Construct id stem and `${<Id>FunctionArn}` placeholder stem in statemachine.asl.json. */
  readonly id: string;
  readonly description: string;
  /** Extra environment beyond EVIDENCE_BUCKET, which every step gets. */
  readonly environment?: (arns: ScopeArns) => Record<string, string>;
  /** The function timeout when the default (DEFAULT_STEP_TIMEOUT_SECONDS) is not enough, and why. */
  readonly timeout?: { readonly seconds: number; readonly why: string };
  readonly statements: (arns: ScopeArns) => StepStatement[];
}

// ---------------------------------------------------------------------------------------------
// ARN builders: partition, region and account come from the deployment, never hard-coded.

const region = Aws.REGION;
const account = Aws.ACCOUNT_ID;
const partition = Aws.PARTITION;

export const arn = {
  instances: `arn:${partition}:ec2:${region}:${account}:instance/*`,
  volumes: `arn:${partition}:ec2:${region}:${account}:volume/*`,
  // Snapshot ARNs carry no account id (SAR: arn:${Partition}:ec2:${Region}::snapshot/${SnapshotId}).
  snapshots: `arn:${partition}:ec2:${region}::snapshot/*`,
  securityGroups: `arn:${partition}:ec2:${region}:${account}:security-group/*`,
  networkInterfaces: `arn:${partition}:ec2:${region}:${account}:network-interface/*`,
  subnets: `arn:${partition}:ec2:${region}:${account}:subnet/*`,
  networkAcls: `arn:${partition}:ec2:${region}:${account}:network-acl/*`,
  vpcs: `arn:${partition}:ec2:${region}:${account}:vpc/*`,
  autoScalingGroups: `arn:${partition}:autoscaling:${region}:${account}:autoScalingGroup:*:autoScalingGroupName/*`,
  targetGroups: `arn:${partition}:elasticloadbalancing:${region}:${account}:targetgroup/*/*`,
  iamRoles: `arn:${partition}:iam::${account}:role/*`,
  iamInstanceProfiles: `arn:${partition}:iam::${account}:instance-profile/*`,
  // AWS-owned SSM documents have no account in their ARN.
  runShellScript: `arn:${partition}:ssm:${region}::document/AWS-RunShellScript`,
  runPowerShellScript: `arn:${partition}:ssm:${region}::document/AWS-RunPowerShellScript`,
};

/**
 * Every IAM role this stack creates lives under this path, so that it can be named in a Deny;
 * except the forensic role (FORENSIC_ROLE_PATH).
 */
export const ROLE_PATH = '/cordon/';
/**
 * The forensic role's path: outside ROLE_PATH (role/cordon/* does not match role/cordon-forensic/...),
 * because detach-profile must put the cordon-revoke policy on it, which the Deny on ROLE_PATH
 * forbids. Outside that path it is also refused kms:Decrypt by the evidence key's policy.
 */
export const FORENSIC_ROLE_PATH = '/cordon-forensic/';
export const ownRoles = `arn:${partition}:iam::${account}:role${ROLE_PATH}*`;

/** Every step function's timeout unless its definition says otherwise. */
export const DEFAULT_STEP_TIMEOUT_SECONDS = 60;

/**
 * The only evidence keys written from the host during a collection: <incident>/<instance>/ssm/...
 * (collection.txt.gz, memory.lime), through the URLs that ssm-collect presigns. No key that Cordon
 * reads as its own record (manifest.json, pre-incident-state.json, notifications/*) matches:
 * incident ids and execution names have no "/", so none contains "/i-<id>/ssm/".
 */
export const FORENSIC_UPLOAD_KEYS = '*/i-*/ssm/*';

/**
 * What the SSM agent calls to stay registered and take Run Command: the forensic role's whole
 * grant, and the actions that the revocation policy leaves out of its deny (NotAction) for an
 * instance under collection (ARCHITECTURE.md). They are the registration and channel actions of
 * AmazonSSMManagedInstanceCore (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AmazonSSMManagedInstanceCore.html)
 * without what that policy adds for State Manager, Patch Manager, Inventory and documents
 * (ssm:GetParameter(s), GetDocument, ListAssociations, PutInventory, ...): Run Command delivers the
 * document with the command on the ec2messages/ssmmessages channel.
 */
export const AGENT_CHANNEL_ACTIONS = [
  'ssm:UpdateInstanceInformation',
  'ssmmessages:CreateControlChannel',
  'ssmmessages:CreateDataChannel',
  'ssmmessages:OpenControlChannel',
  'ssmmessages:OpenDataChannel',
  'ec2messages:AcknowledgeMessage',
  'ec2messages:DeleteMessage',
  'ec2messages:FailMessage',
  'ec2messages:GetEndpoint',
  'ec2messages:GetMessages',
  'ec2messages:SendReply',
] as const;

/** The tag namespace that Cordon writes; tag-writing statements allow no other key. */
export const TAG_PREFIX = 'cordon:';
/** The tag that marks a security group as created by Cordon (the quarantine group). */
export const ROLE_TAG = 'cordon:role';

// Read-only calls without resource-level permissions are still held to the deployment region.
const inRegion = { StringEquals: { 'aws:RequestedRegion': region } };
const onlyCordonTagKeys = {
  'ForAllValues:StringLike': { 'aws:TagKeys': [`${TAG_PREFIX}*`] },
  // ForAllValues is true for an empty set; require that tag keys are actually present.
  Null: { 'aws:TagKeys': 'false' },
};

const NO_RESOURCE_LEVEL =
  'the Service Authorization Reference lists no resource type for these actions, so "*" is the only valid Resource; aws:RequestedRegion keeps them to the deployment region';

// ---------------------------------------------------------------------------------------------
// Shared statement builders.

type BucketAccess = {
  read?: boolean;
  write?: boolean;
  list?: boolean;
  /** Sign PUT URLs for the host's collection output (FORENSIC_UPLOAD_KEYS only). */
  presignHostUploads?: boolean;
};

/** Evidence bucket access, and the KMS use that it needs on the bucket key. */
function evidence(arns: ScopeArns, access: BucketAccess): StepStatement[] {
  const out: StepStatement[] = [];
  const objects = `${arns.evidenceBucketArn}/*`;
  if (access.write) {
    out.push({
      sid: 'EvidenceWrite',
      actions: ['s3:PutObject'],
      resources: [objects],
      // The evidence writer always sends If-None-Match: * (never overwrite evidence); the
      // condition makes that a rule of the role too, not only of the code.
      conditions: { StringEquals: { 's3:if-none-match': '*' } },
      why: 'write evidence objects; keys are <incident_id>/<instance_id>/<name>, known only at run time, so the scope is every object of the evidence bucket, and only as a create-if-absent put',
    });
  }
  if (access.presignHostUploads) {
    out.push({
      sid: 'PresignHostUploads',
      actions: ['s3:PutObject'],
      resources: [`${arns.evidenceBucketArn}/${FORENSIC_UPLOAD_KEYS}`],
      why: 'presign the PUT URLs that the collection script uploads its output and memory image to: a presigned request is authorized as the principal that signed it (https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html), so the host needs no S3 permission at all. Only collection output keys <incident_id>/<instance_id>/ssm/..., known only at run time; Cordon\'s own records (manifest.json, pre-incident-state.json, notifications/*) never match. No If-None-Match condition: the host sends the request, not the function; versioning and Object Lock keep every version, and the function hashes what arrived against the script\'s hash',
    });
  }
  if (access.read) {
    out.push({
      sid: 'EvidenceRead',
      actions: ['s3:GetObject'],
      resources: [objects],
      why: 'read back evidence objects (HeadObject/GetObject) to make retried writes idempotent; keys are known only at run time, so the scope is every object of the evidence bucket',
    });
  }
  if (access.list) {
    out.push({
      sid: 'EvidenceList',
      actions: ['s3:ListBucket'],
      resources: [arns.evidenceBucketArn],
      why: 'without ListBucket S3 answers a missing key with 403 instead of 404; scoped to the evidence bucket itself',
    });
  }
  const keyActions = [
    ...(access.write || access.presignHostUploads ? ['kms:GenerateDataKey'] : []),
    ...(access.read ? ['kms:Decrypt'] : []),
  ];
  if (keyActions.length > 0) {
    out.push({
      sid: 'EvidenceKey',
      actions: keyActions,
      resources: [arns.evidenceKeyArn],
      conditions: {
        StringEquals: {
          'kms:ViaService': `s3.${region}.amazonaws.com`,
          // With an S3 Bucket Key the encryption context is the bucket ARN.
          'kms:EncryptionContext:aws:s3:arn': arns.evidenceBucketArn,
        },
      },
      why: 'SSE-KMS on the evidence bucket: GenerateDataKey to write (a presigned PUT too: S3 calls KMS as the signer, https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html), Decrypt to read; only the bucket key, only through S3, only for this bucket',
    });
  }
  return out;
}

/**
 * The collection budget, for the function that validates the request (metadata: "Validate input"
 * writes the default into the incident and refuses a requested budget above the maximum) and for
 * the one that runs the collection (ssm-collect derives every timeout from it).
 */
function collectionEnvironment(arns: ScopeArns): Record<string, string> {
  const { collectionBudgetSeconds: budget, collectionMaxBudgetSeconds: max } = arns;
  if (budget === undefined || max === undefined) throw new Error('the collection budget is not set');
  if (budget > max) throw new Error(`the collection budget ${budget} exceeds its maximum ${max}`);
  return { COLLECTION_BUDGET_SECONDS: String(budget), COLLECTION_MAX_BUDGET_SECONDS: String(max) };
}

// ---------------------------------------------------------------------------------------------
// The table.

export const STEPS: readonly StepDefinition[] = [
  {
    name: 'metadata',
    binary: 'cordon-metadata',
    id: 'Metadata',
    description: 'Cordon: validate the request and record the instance metadata as evidence',
    environment: collectionEnvironment,
    statements: (arns): StepStatement[] => [
      {
        sid: 'DescribeEc2',
        actions: [
          'ec2:DescribeInstances',
          'ec2:DescribeVolumes',
          'ec2:DescribeSecurityGroups',
          'ec2:DescribeIamInstanceProfileAssociations',
          'ec2:DescribeNetworkInterfaces',
        ],
        resources: ['*'],
        conditions: inRegion,
        why: `record the instance, its volumes, groups, profile and its interfaces' connection tracking timeouts: ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'DescribeInstanceAttribute',
        actions: ['ec2:DescribeInstanceAttribute'],
        resources: [arn.instances],
        why: 'record termination protection and shutdown behaviour; takes the instance resource type, and the target instance is known only at run time, so any instance of this account and region',
      },
      {
        sid: 'DescribeMembership',
        actions: [
          'autoscaling:DescribeAutoScalingInstances',
          'elasticloadbalancing:DescribeTargetGroups',
          'elasticloadbalancing:DescribeTargetHealth',
          'ssm:DescribeInstanceInformation',
        ],
        resources: ['*'],
        conditions: inRegion,
        why: `record Auto Scaling group, target group and SSM agent status: ${NO_RESOURCE_LEVEL}`,
      },
      ...evidence(arns, { read: true, write: true, list: true }),
    ],
  },
  {
    name: 'screenshot',
    binary: 'cordon-screenshot',
    id: 'Screenshot',
    description: 'Cordon: save the console screenshot and console output as evidence',
    statements: (arns): StepStatement[] => [
      {
        sid: 'Console',
        actions: ['ec2:GetConsoleScreenshot', 'ec2:GetConsoleOutput'],
        resources: [arn.instances],
        why: 'capture the console; both take the instance resource type, and the target is known only at run time, so any instance of this account and region',
      },
      ...evidence(arns, { read: true, write: true, list: true }),
    ],
  },
  {
    name: 'snapshot',
    binary: 'cordon-snapshot',
    id: 'Snapshot',
    description: 'Cordon: snapshot every EBS volume of the instance, tagged with the incident',
    // The snapshot lock follows the evidence retention (steps/snapshot: LockPolicy).
    environment: (arns) => {
      if (!arns.retentionMode || !arns.retentionDays) throw new Error('snapshot: the evidence retention is not set');
      return { SNAPSHOT_LOCK_MODE: arns.retentionMode.toLowerCase(), SNAPSHOT_LOCK_DAYS: String(arns.retentionDays) };
    },
    statements: (): StepStatement[] => [
      {
        sid: 'DescribeSnapshots',
        actions: ['ec2:DescribeInstances', 'ec2:DescribeSnapshots'],
        resources: ['*'],
        conditions: inRegion,
        why: `find the volumes and follow snapshot progress: ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'CreateSnapshots',
        actions: ['ec2:CreateSnapshots', 'ec2:CreateSnapshot'],
        resources: [arn.instances, arn.volumes, arn.snapshots],
        why: 'snapshot the instance volumes; CreateSnapshots authorizes instance, volume and snapshot, CreateSnapshot volume and snapshot; targets are known only at run time, so any of this account and region (snapshot ARNs carry no account)',
      },
      {
        sid: 'TagNewSnapshots',
        actions: ['ec2:CreateTags'],
        resources: [arn.snapshots],
        conditions: { StringEquals: { 'ec2:CreateAction': ['CreateSnapshots', 'CreateSnapshot'] } },
        why: 'tag snapshots in the same call that creates them (TagSpecifications); ec2:CreateAction allows tagging only as part of these two creating calls',
      },
      {
        sid: 'TagSnapshotsCordonKeys',
        actions: ['ec2:CreateTags'],
        resources: [arn.snapshots],
        conditions: onlyCordonTagKeys,
        why: 'add incident tags to existing snapshots on a retry; only tag keys in the cordon: namespace',
      },
      {
        sid: 'LockSnapshots',
        actions: ['ec2:LockSnapshot'],
        resources: [arn.snapshots],
        why: 'lock every evidence snapshot in the retention mode for the retention days (https://docs.aws.amazon.com/ebs/latest/userguide/snapshot-lock-iam.html); never ec2:UnlockSnapshot',
      },
      {
        sid: 'DescribeLockedSnapshots',
        actions: ['ec2:DescribeLockedSnapshots'],
        resources: ['*'],
        conditions: inRegion,
        why: `read the locks first so that a rerun does not modify them: ${NO_RESOURCE_LEVEL}`,
      },
    ],
  },
  {
    name: 'termprotect',
    binary: 'cordon-termprotect',
    id: 'Termprotect',
    description: 'Cordon: enable termination protection, keep the instance on shutdown, detach it from its Auto Scaling group',
    statements: (): StepStatement[] => [
      {
        sid: 'DescribeInstances',
        actions: ['ec2:DescribeInstances', 'autoscaling:DescribeAutoScalingInstances'],
        resources: ['*'],
        conditions: inRegion,
        why: `read the instance and its Auto Scaling membership: ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'ProtectInstance',
        actions: ['ec2:DescribeInstanceAttribute', 'ec2:ModifyInstanceAttribute'],
        resources: [arn.instances],
        why: 'set disableApiTermination and instanceInitiatedShutdownBehavior; only instance resources are granted, so a ModifyInstanceAttribute that changes security groups (which also authorizes security-group resources) is denied',
      },
      {
        sid: 'TagInstance',
        actions: ['ec2:CreateTags'],
        resources: [arn.instances],
        conditions: onlyCordonTagKeys,
        why: 'mark the instance as under incident response; only tag keys in the cordon: namespace',
      },
      {
        sid: 'DetachFromAutoScaling',
        actions: ['autoscaling:DetachInstances'],
        resources: [arn.autoScalingGroups],
        why: 'take the instance out of its Auto Scaling group so that it is not terminated as unhealthy; the group is known only at run time, so any group of this account and region',
      },
      {
        sid: 'StopInstanceUnderResponse',
        actions: ['ec2:StopInstances'],
        resources: [arn.instances],
        conditions: { Null: { [`aws:ResourceTag/${TAG_PREFIX}incident-id`]: 'false' } },
        why: 'stop (or hibernate) the instance once the evidence is taken (stop_after_evidence); StopInstances takes the instance resource type, and aws:ResourceTag limits it to instances that Cordon tagged cordon:incident-id (termprotect and quarantine tag them during containment), so no other instance can be stopped',
      },
    ],
  },
  {
    name: 'detach-profile',
    binary: 'cordon-detach-profile',
    id: 'DetachProfile',
    description: 'Cordon: swap the instance profile for the forensic one and revoke the old role sessions',
    environment: (arns) => ({ FORENSIC_INSTANCE_PROFILE_ARN: arns.forensicInstanceProfileArn }),
    statements: (arns): StepStatement[] => [
      {
        sid: 'DescribeAssociations',
        actions: ['ec2:DescribeIamInstanceProfileAssociations'],
        resources: ['*'],
        conditions: inRegion,
        why: `find the current profile association: ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'Disassociate',
        actions: ['ec2:DisassociateIamInstanceProfile'],
        resources: [arn.instances],
        why: 'remove the compromised profile; takes the instance resource type, and the target is known only at run time',
      },
      {
        sid: 'AssociateForensicProfileOnly',
        actions: ['ec2:AssociateIamInstanceProfile'],
        resources: [arn.instances],
        conditions: { ArnEquals: { 'ec2:NewInstanceProfile': arns.forensicInstanceProfileArn } },
        why: 'attach the forensic profile; ec2:NewInstanceProfile allows attaching no other profile',
      },
      {
        sid: 'PassForensicRoleToEc2',
        actions: ['iam:PassRole'],
        resources: [arns.forensicRoleArn],
        conditions: { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
        why: 'AssociateIamInstanceProfile needs PassRole for the profile role: only the forensic role, only to EC2',
      },
      {
        sid: 'ReadInstance',
        actions: ['ec2:DescribeInstances'],
        resources: ['*'],
        conditions: inRegion,
        why: `read the instance metadata options before and after disabling the endpoint: ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'DisableInstanceMetadata',
        actions: ['ec2:ModifyInstanceMetadataOptions'],
        resources: [arn.instances],
        conditions: { Null: { [`aws:ResourceTag/${TAG_PREFIX}incident-id`]: 'false' } },
        why: 'turn the instance metadata endpoint off after the collection, so that no profile associated later can hand credentials to the host; takes the instance resource type, and aws:ResourceTag limits it to instances that Cordon tagged cordon:incident-id during containment',
      },
      {
        sid: 'ReadInstanceProfile',
        actions: ['iam:GetInstanceProfile'],
        resources: [arn.iamInstanceProfiles],
        why: 'find the role of the compromised profile; the profile is known only at run time, so any instance profile of this account',
      },
      {
        sid: 'RevokeRoleSessions',
        actions: ['iam:ListRolePolicies', 'iam:GetRolePolicy', 'iam:PutRolePolicy'],
        resources: [arn.iamRoles],
        why: 'keep the one cordon-revoke inline deny policy (ec2:SourceInstanceARN lists, or aws:TokenIssueTime) on the compromised role, measuring the role\'s other inline policies against its 10,240-character quota first, and once a collection ends put a cordon-forensic-<instance-id> deny policy on the forensic role (its sessions on that instance); IAM has no condition key for an inline policy name and the compromised role is known only at run time, so any role of this account (the names are enforced by the step code, and the Deny below keeps Cordon\'s own roles out of reach; the forensic role lives outside their path for this reason)',
      },
      {
        sid: 'PruneForensicRevocations',
        actions: ['iam:DeleteRolePolicy'],
        resources: [arns.forensicRoleArn],
        why: 'the forensic role is shared by every incident and its inline policies share one 10,240-character quota: before adding a cordon-forensic-<instance-id> policy, delete those whose cut-off is older than any session can live. Only the forensic role; never a compromised role, whose cordon-revoke policy stays',
      },
      {
        sid: 'NeverEditCordonRoles',
        effect: 'Deny',
        actions: ['iam:PutRolePolicy'],
        resources: [ownRoles],
        why: `PutRolePolicy on "role/*" would let this function grant itself anything: every role of this stack that runs Cordon's code lives under the ${ROLE_PATH} path and is denied. The forensic role lives under ${FORENSIC_ROLE_PATH} instead, so that this function can revoke its sessions after a collection; it is assumed only by EC2, and this function can already put a policy on any role of the account outside Cordon's path`,
      },
    ],
  },
  {
    name: 'ssm-collect',
    binary: 'cordon-ssm-collect',
    id: 'SsmCollect',
    description: 'Cordon: run the volatile-data collection on the instance through SSM Run Command',
    environment: collectionEnvironment,
    timeout: {
      seconds: 900,
      why: 'one invocation may, at the deadline, call CancelCommand and wait up to 60 s (cordon_common::collection::CANCEL_WAIT_SECONDS) for a terminal status, and then stream every uploaded object back from S3 to hash it, a memory image of up to 5 GiB (the most one presigned PUT can carry) among them; nothing bounds that read but the function timeout, so it gets the Lambda maximum of 900 s (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html). A poll that finds the command still running returns in seconds, so the long timeout costs nothing there',
    },
    statements: (arns): StepStatement[] => [
      {
        sid: 'ReadSsm',
        actions: ['ssm:DescribeInstanceInformation', 'ssm:ListCommands', 'ssm:GetCommandInvocation'],
        resources: ['*'],
        conditions: inRegion,
        why: `check the agent and follow the command: ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'RunCollectionScript',
        actions: ['ssm:SendCommand'],
        resources: [arn.runShellScript, arn.runPowerShellScript, arn.instances],
        why: 'run the collection script: only the two AWS-owned shell documents, on EC2 instances (the target is known only at run time). No output bucket: the command is sent without OutputS3BucketName, the script uploads to presigned URLs',
      },
      {
        sid: 'CancelCollection',
        actions: ['ssm:CancelCommand'],
        resources: ['*'],
        conditions: inRegion,
        why: `cancel a collection that reached the end of its budget, before the forensic profile and the agent's channel are removed: ${NO_RESOURCE_LEVEL} (CancelCommand names only a command id), so a command of any document in this region; the step cancels only the command it sent, whose id it keeps in the incident`,
      },
      ...evidence(arns, { read: true, list: true, presignHostUploads: true }),
    ],
  },
  {
    name: 'quarantine',
    binary: 'cordon-quarantine',
    id: 'Quarantine',
    description: 'Cordon: move every network interface to an isolation security group and deregister the instance from load balancers',
    statements: (): StepStatement[] => [
      {
        sid: 'DescribeNetwork',
        actions: [
          'ec2:DescribeInstances',
          'ec2:DescribeSecurityGroups',
          'ec2:DescribeNetworkInterfaces',
          'ec2:DescribeInstanceTypes',
          'elasticloadbalancing:DescribeTargetGroups',
          'elasticloadbalancing:DescribeTargetHealth',
        ],
        resources: ['*'],
        conditions: inRegion,
        why: `find the interfaces (and the ones sharing their subnets), the existing isolation group, the target groups, and whether the instance type can lower its connection-tracking timeouts (Nitro only): ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'DescribeNetworkPaths',
        actions: [
          'ec2:DescribeRouteTables',
          'ec2:DescribeNetworkAcls',
          'ec2:DescribeNatGateways',
          'ec2:DescribeVpcEndpoints',
          'ec2:DescribeTransitGatewayVpcAttachments',
          'ec2:DescribeAddresses',
          'elasticloadbalancing:DescribeLoadBalancers',
        ],
        resources: ['*'],
        conditions: inRegion,
        why: `read the network facts of the containment table (routes and where they lead, network ACLs, NAT gateways, endpoints, transit gateway attachments, Elastic IPs, load balancers), and the VPC's ssm, ssmmessages, ec2messages and S3 endpoints that the collection path opens to: ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'DescribeS3PrefixList',
        actions: ['ec2:DescribePrefixLists'],
        resources: ['*'],
        conditions: inRegion,
        why: `find the prefix list of com.amazonaws.<region>.s3, the destination of the collection group's egress rule to the S3 gateway endpoint: ${NO_RESOURCE_LEVEL}`,
      },
      {
        sid: 'CreateTaggedGroup',
        actions: ['ec2:CreateSecurityGroup'],
        resources: [arn.securityGroups],
        conditions: { Null: { [`aws:RequestTag/${ROLE_TAG}`]: 'false' } },
        why: `create the isolation group only with the ${ROLE_TAG} tag in the same call, which is what the rule and tag statements below key on`,
      },
      {
        sid: 'CreateGroupInVpc',
        actions: ['ec2:CreateSecurityGroup'],
        resources: [arn.vpcs],
        why: 'CreateSecurityGroup also authorizes the VPC; the instance VPC is known only at run time, and the group itself is held to the tag condition above',
      },
      {
        sid: 'TagNewGroup',
        actions: ['ec2:CreateTags'],
        resources: [arn.securityGroups],
        conditions: { StringEquals: { 'ec2:CreateAction': 'CreateSecurityGroup' } },
        why: 'tag the isolation group in the call that creates it; no tagging of existing groups',
      },
      {
        sid: 'TagInstance',
        actions: ['ec2:CreateTags'],
        resources: [arn.instances],
        conditions: onlyCordonTagKeys,
        why: 'record the quarantine on the instance; only tag keys in the cordon: namespace',
      },
      {
        sid: 'EditCordonGroupsOnly',
        actions: [
          'ec2:AuthorizeSecurityGroupIngress',
          'ec2:AuthorizeSecurityGroupEgress',
          'ec2:RevokeSecurityGroupIngress',
          'ec2:RevokeSecurityGroupEgress',
        ],
        resources: [arn.securityGroups],
        conditions: { Null: { [`aws:ResourceTag/${ROLE_TAG}`]: 'false' } },
        why: `set the Cordon groups' rules: remove the default allow-all egress, and any rule that an existing isolation group has gained since it was made (RevokeSecurityGroupIngress/Egress), open the flush group, give the collection group its TCP 443 egress to the endpoints' groups and the S3 prefix list (or, opted in, anywhere); only groups carrying ${ROLE_TAG}, so no other group of the account can be opened or emptied`,
      },
      {
        sid: 'MoveInterfaces',
        actions: ['ec2:ModifyNetworkInterfaceAttribute'],
        resources: [arn.networkInterfaces, arn.instances, arn.subnets],
        why: 'replace the groups of every interface of the instance; interfaces are known only at run time (the call also authorizes the attached instance and the subnet)',
      },
      {
        sid: 'MoveInterfacesToCordonGroupsOnly',
        actions: ['ec2:ModifyNetworkInterfaceAttribute'],
        resources: [arn.securityGroups],
        conditions: { Null: { [`aws:ResourceTag/${ROLE_TAG}`]: 'false' } },
        why: `the groups named in the call are authorized too: only groups carrying ${ROLE_TAG}, so an interface can be moved into Cordon's groups (flush, isolation, collection) and nowhere else`,
      },
      {
        sid: 'InstanceRulesInNetworkAcls',
        actions: ['ec2:CreateNetworkAclEntry', 'ec2:DeleteNetworkAclEntry'],
        resources: [arn.networkAcls],
        why: 'add deny rules for the instance\'s own addresses to the network ACLs that see its packets (options.network sg+nacl), and during a collection allow rules numbered before them (TCP 443 from the instance, TCP 1024-65535 back to it) that close-collection-path deletes again; the ACLs are the customer\'s and known only at run time, so any network ACL of this account and region. The Service Authorization Reference gives CreateNetworkAclEntry and DeleteNetworkAclEntry only aws:ResourceTag, ec2:NetworkAclID, ec2:ResourceTag and ec2:Vpc as condition keys: nothing names the rule\'s action, number or CIDR, and the VPC is known only at run time, so the step code is what keeps the rules to the instance\'s addresses and deletes only the allow rules it added (recognised by their exact shape: allow, TCP, those ports, one of the instance\'s addresses, a number in Cordon\'s range 1-99); no ReplaceNetworkAclEntry is granted',
      },
      {
        sid: 'DeregisterTargets',
        actions: ['elasticloadbalancing:DeregisterTargets'],
        resources: [arn.targetGroups],
        why: 'take the instance out of its target groups; they are known only at run time, so any target group of this account and region',
      },
    ],
  },
  {
    name: 'notify',
    binary: 'cordon-notify',
    id: 'Notify',
    description: 'Cordon: publish the incident summary to the notification topic and store it as evidence',
    environment: (arns) => ({ TOPIC_ARN: arns.topicArn }),
    statements: (arns): StepStatement[] => [
      {
        sid: 'Publish',
        actions: ['sns:Publish'],
        resources: [arns.topicArn],
        why: 'tell the team: only the Cordon topic',
      },
      {
        sid: 'TopicKey',
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: [arns.topicKeyArn],
        conditions: { StringEquals: { 'kms:ViaService': `sns.${region}.amazonaws.com` } },
        why: 'a publisher to a KMS-encrypted topic needs GenerateDataKey and Decrypt on its key: only the topic key, only through SNS',
      },
      {
        sid: 'ReadFailedExecution',
        actions: ['states:GetExecutionHistory', 'states:DescribeExecution'],
        resources: [arns.executionsArn],
        why: 'announce a failed, timed-out or aborted response from outside it (the status-change rule invokes notify): which state failed, with which error, what was done before; only executions of the Cordon state machine',
      },
      ...evidence(arns, { read: true, write: true, list: true }),
    ],
  },
];

// ---------------------------------------------------------------------------------------------
// The forensic role: what a quarantined instance holds while Cordon collects from it. Not a
// function's role, but the host's: a root user on the compromised host can use every permission
// it has, so it has only what the agent needs to take Run Command, and no S3, KMS or
// ssm:GetParameter* at all (the output goes to URLs that ssm-collect presigns).

export function forensicRoleStatements(): StepStatement[] {
  const [register, ...channel] = AGENT_CHANNEL_ACTIONS;
  return [
    {
      sid: 'AgentRegistration',
      actions: [register],
      resources: [arn.instances],
      why: 'the SSM agent reports itself (ping, platform, agent version) with UpdateInstanceInformation, without which Systems Manager does not send it commands; the action takes the instance resource type, and the instance is any that Cordon contains, so any EC2 instance of this account and region (an on-premises managed-instance is never given this role)',
    },
    {
      sid: 'AgentRunCommandChannel',
      actions: channel,
      resources: ['*'],
      why: 'the SSM agent takes Run Command and returns its output over the ec2messages (GetMessages, AcknowledgeMessage, SendReply, ...) and ssmmessages (control and data channel) endpoints: the Service Authorization Reference lists no resource type for any action of either service (list_ec2messages.html, list_ssmmessages.html), so "*" is the only valid Resource; the credentials are the instance\'s own, so they act only as that instance',
    },
  ];
}

/** `${MetadataFunctionArn}` and so on: the state machine placeholder of a step's function. */
export function functionArnPlaceholder(step: StepDefinition): string {
  return `${step.id}FunctionArn`;
}

// ---------------------------------------------------------------------------------------------
// The GuardDuty dispatcher: not a step of the state machine (nothing in the definition invokes
// it, and the state machine role cannot), but a function with a role of its own all the same.
// Service Authorization Reference: list_awsstepfunctions.html gives ListExecutions and
// StartExecution the `stateMachine` resource type; list_amazonsqs.html gives ReceiveMessage,
// DeleteMessage, GetQueueAttributes and ChangeMessageVisibility (which also authorizes
// ChangeMessageVisibilityBatch) the `queue` resource type.

/** ARNs the dispatcher's statements are scoped to. */
export interface DispatchArns {
  readonly stateMachineArn: string;
  readonly findingsQueueArn: string;
}

export interface DispatchDefinition {
  readonly name: 'dispatch';
  readonly binary: string;
  readonly id: string;
  readonly description: string;
  readonly statements: (arns: DispatchArns) => StepStatement[];
}

export const DISPATCH: DispatchDefinition = {
  name: 'dispatch',
  binary: 'cordon-dispatch',
  id: 'Dispatch',
  description: 'Cordon: start queued GuardDuty responses while fewer than the bound run; leave the rest queued',
  statements: (arns): StepStatement[] => [
    {
      sid: 'CountRunning',
      actions: ['states:ListExecutions'],
      resources: [arns.stateMachineArn],
      why: 'count the RUNNING executions of the Cordon state machine (the bound); only that state machine',
    },
    {
      sid: 'StartResponses',
      actions: ['states:StartExecution'],
      resources: [arns.stateMachineArn],
      why: 'start a response per queued finding, named after the finding; only the Cordon state machine',
    },
    {
      sid: 'ConsumeFindings',
      actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes'],
      resources: [arns.findingsQueueArn],
      why: 'the SQS event source mapping reads and deletes messages with the function\'s execution role (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html); only the findings queue',
    },
    {
      sid: 'DelayQueuedFindings',
      actions: ['sqs:ChangeMessageVisibility'],
      resources: [arns.findingsQueueArn],
      why: 'offer a finding that found every slot taken again after the retry delay (ChangeMessageVisibilityBatch); only the findings queue',
    },
  ],
};
