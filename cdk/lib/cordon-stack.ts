// Cordon's AWS deployment: the evidence bucket and its access-log bucket, the notification topic,
// the eight step functions (one role each, least privilege from lib/steps.ts), the forensic
// instance profile, the Standard state machine built from ../statemachine.asl.json, the
// SecurityResponse REST API that starts and reads executions directly (no Lambda in front), and
// optionally a GuardDuty rule.

import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  Aws,
  CfnOutput,
  Duration,
  RemovalPolicy,
  Stack,
  type StackProps,
  Validations,
} from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct, IConstruct } from 'constructs';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference';

import {
  DISPATCH_MAX_CONCURRENCY,
  DISPATCH_RETRY_DELAY_SECONDS,
  DISPATCH_TIMEOUT_SECONDS,
  FINDINGS_MAX_RECEIVE_COUNT,
} from './concurrency';
import type { CordonConfig } from './config';
import { loadDefinition } from './definition';
import {
  DEFAULT_STEP_TIMEOUT_SECONDS,
  DISPATCH,
  FORENSIC_ROLE_PATH,
  ROLE_PATH,
  STEPS,
  forensicRoleStatements,
  functionArnPlaceholder,
  type ScopeArns,
  type StepName,
  type StepStatement,
} from './steps';
import {
  describeExecutionRequest,
  describeExecutionResponse,
  describeExecutionError,
  startExecutionRequest,
  startExecutionResponse,
  startExecutionError,
  incidentRequestSchema,
} from './api-templates';

/**
 * What the evidence bucket policy denies to every principal but the break-glass role: the ways an
 * account principal could remove or shorten the life of evidence that Object Lock and versioning
 * otherwise keep (README "Evidence").
 */
export const EVIDENCE_PROTECTED_ACTIONS = [
  's3:BypassGovernanceRetention',
  's3:PutObjectRetention',
  's3:PutBucketObjectLockConfiguration',
  's3:DeleteObjectVersion',
  's3:PutBucketVersioning',
];

export interface CordonStackProps extends StackProps {
  readonly config: CordonConfig;
  /** statemachine.asl.json; its `${...}` placeholders decide what must be substituted. */
  readonly definitionPath: string;
}

export class CordonStack extends Stack {
  public readonly evidenceBucket: s3.Bucket;
  public readonly topic: sns.Topic;
  public readonly functions: Record<StepName, lambda.Function>;
  public readonly stateMachine: sfn.StateMachine;
  public readonly api: apigw.RestApi;
  /** The substitutions given to the state machine, by placeholder name. */
  public readonly definitionSubstitutions: Record<string, string>;
  /** Encrypts every log group of the stack; its policy admits CloudWatch Logs for those groups only. */
  public readonly logsKey: kms.Key;
  /** The ARN of every log group the stack creates, as CloudWatch Logs puts it in the encryption context. */
  private readonly logGroupArns: string[] = [];

  constructor(scope: Construct, id: string, props: CordonStackProps) {
    super(scope, id, props);
    const { config } = props;

    // ----------------------------------------------------------------------------- evidence
    const evidenceKey = new kms.Key(this, 'EvidenceKey', {
      description: 'Cordon evidence bucket (SSE-KMS)',
      enableKeyRotation: true,
      // Retained with the bucket: without the key the retained evidence could not be read.
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // ----------------------------------------------------------------------------- logs key
    // The logs are evidence too (the state machine logs ALL with execution data). CloudWatch Logs
    // uses the key as logs.<region>.amazonaws.com with the log group's ARN as encryption context;
    // the statement that admits it names this stack's groups only (added at the end of the
    // constructor, once every group exists):
    // https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html
    this.logsKey = new kms.Key(this, 'LogsKey', {
      description: 'Cordon log groups (CloudWatch Logs encryption)',
      enableKeyRotation: true,
      // Retained with the log groups (Retain as well): without the key they could not be read.
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // S3 server access logs can only be delivered to a bucket with SSE-S3, hence a second key-less
    // bucket; it records who read or wrote which evidence object. (cdk-nag's S1 knows a log
    // destination bucket and does not ask it to log itself.)
    const accessLogBucket = new s3.Bucket(this, 'AccessLogBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      versioned: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    const retention = Duration.days(config.retentionDays);
    this.evidenceBucket = new s3.Bucket(this, 'EvidenceBucket', {
      versioned: true,
      objectLockEnabled: true,
      objectLockDefaultRetention:
        config.retentionMode === 'COMPLIANCE'
          ? s3.ObjectLockRetention.compliance(retention)
          : s3.ObjectLockRetention.governance(retention),
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: evidenceKey,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      serverAccessLogsBucket: accessLogBucket,
      serverAccessLogsPrefix: 'evidence/',
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // Admins cannot quietly remove evidence. A Deny in the bucket policy wins over any Allow of an
    // identity policy in the account (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html),
    // so neither an administrator nor a stolen admin credential can bypass GOVERNANCE retention,
    // shorten or change a retention, change the bucket's Object Lock default, delete an object
    // version or touch versioning; only the optional break-glass role is exempt. aws:PrincipalArn
    // holds the role's ARN for every session of the role (not the session ARN):
    // https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principalarn
    // CloudFormation is not locked out of what it must do: versioning and the Object Lock
    // configuration are set by CreateBucket before this policy exists (the policy refers to the
    // bucket, so it is created after it), the bucket is retained on stack deletion (no version is
    // deleted), and nothing Cordon runs needs these actions. The consequence: a later change of
    // retentionDays/retentionMode is a PutObjectLockConfiguration that this policy denies, so it
    // has to be deployed with the break-glass role (README "Evidence"). What the account cannot
    // deny itself here (changing this very policy, EC2 snapshot deletion) the README's SCP covers.
    this.evidenceBucket.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'EvidenceCannotBeRemoved',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: EVIDENCE_PROTECTED_ACTIONS,
        resources: [this.evidenceBucket.bucketArn, this.evidenceBucket.arnForObjects('*')],
        conditions: config.breakGlassRoleArn
          ? { ArnNotEquals: { 'aws:PrincipalArn': config.breakGlassRoleArn } }
          : undefined,
      }),
    );

    // Who may decrypt evidence. The key keeps the default statement that gives the account root
    // kms:* (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html): it is
    // what lets IAM policies govern the key and keeps the key manageable (without it a key whose
    // other principals are gone can only be recovered through AWS Support). Decryption is then
    // narrowed with a Deny, which no Allow overrides: kms:Decrypt and kms:ReEncryptFrom (re-encrypting
    // under a key of one's own is decryption by another name) for every principal whose
    // aws:PrincipalArn is not a Cordon role, the break-glass role or the investigator role. Cordon's
    // roles are named by their path, not their ARNs: the roles' own policies name this key, so the
    // key naming them would be a circular dependency. Within the path only the roles whose
    // policies grant kms:Decrypt (the evidence-reading steps, lib/steps.ts) can decrypt; the
    // forensic role, which the compromised host holds, lies outside it. S3 calls KMS with the
    // requester's credentials for SSE-KMS
    // (https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html), so reads
    // through S3 are judged by the reader's ARN; no AWS service uses this key as itself, so no
    // kms:ViaService exemption is needed (one for S3 would readmit every reader).
    evidenceKey.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'DecryptOnlyCordonBreakGlassInvestigator',
        effect: iam.Effect.DENY,
        principals: [new iam.AnyPrincipal()],
        actions: ['kms:Decrypt', 'kms:ReEncryptFrom'],
        resources: ['*'],
        conditions: {
          ArnNotLike: {
            'aws:PrincipalArn': [
              `arn:${Aws.PARTITION}:iam::${Aws.ACCOUNT_ID}:role${ROLE_PATH}*`,
              ...(config.breakGlassRoleArn ? [config.breakGlassRoleArn] : []),
              ...(config.investigatorRoleArn ? [config.investigatorRoleArn] : []),
            ],
          },
        },
      }),
    );

    // ----------------------------------------------------------------------------- topic
    const topicKey = new kms.Key(this, 'TopicKey', {
      description: 'Cordon notification topic (SNS SSE)',
      enableKeyRotation: true,
      // Nothing stays encrypted under this key once the topic is gone (SNS keeps no messages).
      removalPolicy: RemovalPolicy.DESTROY,
      pendingWindow: Duration.days(30),
    });
    this.topic = new sns.Topic(this, 'Topic', {
      displayName: 'Cordon incident response',
      masterKey: topicKey,
      enforceSSL: true,
    });
    if (config.notificationEmail) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(config.notificationEmail));
    }

    // ----------------------------------------------------------------------------- forensic profile
    // The role that replaces the compromised instance's own while Cordon collects from it. A root
    // user on the host can use whatever it grants, so it grants only what the SSM agent needs to
    // stay registered and take Run Command (lib/steps.ts: forensicRoleStatements), inline: no
    // managed policy (AmazonSSMManagedInstanceCore would add ssm:GetParameter/GetParameters on "*",
    // every parameter of the account), no S3 and no KMS (the script uploads to URLs that
    // ssm-collect presigns). It lives outside Cordon's role path, so that detach-profile may put
    // the cordon-revoke policy on it after a collection (its sessions outlive the profile).
    const forensicStatements = forensicRoleStatements();
    const forensicRole = new iam.Role(this, 'ForensicRole', {
      path: FORENSIC_ROLE_PATH,
      description: 'Cordon: the role a quarantined instance gets, so that SSM Run Command can collect evidence from it',
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      inlinePolicies: {
        'ssm-agent-run-command': new iam.PolicyDocument({ statements: forensicStatements.map(toPolicyStatement) }),
      },
    });
    acknowledgeWildcards(forensicRole, forensicStatements);
    const forensicProfile = new iam.InstanceProfile(this, 'ForensicInstanceProfile', {
      role: forensicRole,
      path: ROLE_PATH,
    });

    // ----------------------------------------------------------------------------- step functions
    // A fixed name breaks the cycle state machine -> notify function -> notify role -> state
    // machine: notify's role names the executions it may read by this name.
    const stateMachineName = `${this.stackName}-response`;
    const scopeArns: ScopeArns = {
      executionsArn: `arn:${Aws.PARTITION}:states:${Aws.REGION}:${Aws.ACCOUNT_ID}:execution:${stateMachineName}:*`,
      evidenceBucketArn: this.evidenceBucket.bucketArn,
      evidenceKeyArn: evidenceKey.keyArn,
      topicArn: this.topic.topicArn,
      topicKeyArn: topicKey.keyArn,
      forensicRoleArn: forensicRole.roleArn,
      forensicInstanceProfileArn: forensicProfile.instanceProfileArn,
      retentionMode: config.retentionMode,
      retentionDays: config.retentionDays,
      collectionBudgetSeconds: config.collectionBudgetSeconds,
      collectionMaxBudgetSeconds: config.collectionMaxBudgetSeconds,
    };
    const architecture = config.architecture === 'x86_64' ? lambda.Architecture.X86_64 : lambda.Architecture.ARM_64;

    const functions: Partial<Record<StepName, lambda.Function>> = {};
    for (const step of STEPS) {
      // The logs are part of the record of what the response did.
      const logGroup = this.encryptedLogGroup(`${step.id}LogGroup`, `/cordon/${this.stackName}/${step.name}`, config);
      const statements = step.statements(scopeArns);
      const role = new iam.Role(this, `${step.id}Role`, {
        path: ROLE_PATH,
        description: `Cordon ${step.name} step`,
        assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
        inlinePolicies: {
          [`cordon-${step.name}`]: new iam.PolicyDocument({
            statements: [
              ...statements.map(toPolicyStatement),
              // Instead of AWSLambdaBasicExecutionRole (logs:* on every group): this function's
              // own log group only.
              new iam.PolicyStatement({
                sid: 'OwnLogGroup',
                actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
                resources: [logGroup.logGroupArn],
              }),
            ],
          }),
        },
      });
      acknowledgeWildcards(role, statements);

      functions[step.name] = new lambda.Function(this, `${step.id}Function`, {
        description: step.description,
        runtime: lambda.Runtime.PROVIDED_AL2023,
        architecture,
        handler: 'bootstrap',
        code: stepCode(config, step.binary),
        memorySize: 256,
        // steps.ts says why a step needs more than the default.
        timeout: Duration.seconds(step.timeout?.seconds ?? DEFAULT_STEP_TIMEOUT_SECONDS),
        // A response invokes each step function at most once at a time, so this many responses
        // run without one waiting for another's slot, and no other function of the account can
        // take the slots (lib/concurrency.ts: the number, and EC2's limits behind it).
        reservedConcurrentExecutions: config.reservedConcurrency ? config.maxConcurrentResponses : undefined,
        role,
        logGroup,
        loggingFormat: lambda.LoggingFormat.JSON,
        applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
        systemLogLevelV2: lambda.SystemLogLevel.WARN,
        environment: {
          EVIDENCE_BUCKET: this.evidenceBucket.bucketName,
          ...(step.environment?.(scopeArns) ?? {}),
        },
      });
    }
    this.functions = functions as Record<StepName, lambda.Function>;

    // ----------------------------------------------------------------------------- state machine
    this.definitionSubstitutions = {
      ...Object.fromEntries(STEPS.map((step) => [functionArnPlaceholder(step), this.functions[step.name].functionArn])),
      ForensicInstanceProfileArn: forensicProfile.instanceProfileArn,
      EvidenceBucket: this.evidenceBucket.bucketName,
      TopicArn: this.topic.topicArn,
    };
    // Fails the synth if the file uses a placeholder that is not in the map above.
    const definition = loadDefinition(props.definitionPath, Object.keys(this.definitionSubstitutions));

    const stateMachineRole = new iam.Role(this, 'StateMachineRole', {
      path: ROLE_PATH,
      description: 'Cordon state machine: invokes the eight step functions',
      assumedBy: new iam.ServicePrincipal('states.amazonaws.com'),
      inlinePolicies: {
        'invoke-steps': new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({
              sid: 'InvokeSteps',
              actions: ['lambda:InvokeFunction'],
              // Unqualified ARNs only: the definition invokes $LATEST, never a version or alias.
              resources: STEPS.map((step) => this.functions[step.name].functionArn),
            }),
          ],
        }),
      },
    });
    // Under /aws/vendedlogs/: Step Functions' recommended prefix for its vended logs, which keeps
    // the CloudWatch Logs resource policy small
    // (https://docs.aws.amazon.com/step-functions/latest/dg/cw-logs.html).
    const stateMachineLogGroup = this.encryptedLogGroup(
      'StateMachineLogGroup',
      `/aws/vendedlogs/states/${stateMachineName}`,
      config,
    );
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      stateMachineName,
      stateMachineType: sfn.StateMachineType.STANDARD,
      comment: 'Cordon: first response for a suspected compromised EC2 instance',
      definitionBody: sfn.DefinitionBody.fromString(definition.body),
      definitionSubstitutions: this.definitionSubstitutions,
      role: stateMachineRole,
      logs: { destination: stateMachineLogGroup, level: sfn.LogLevel.ALL, includeExecutionData: true },
      tracingEnabled: true,
    });
    // The construct adds the log-delivery and X-Ray actions to the role's default policy.
    Validations.of(stateMachineRole).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Added by the StateMachine construct for logging and tracing: the CloudWatch Logs vended-log delivery actions (logs:CreateLogDelivery, ...) and xray:PutTraceSegments/PutTelemetryRecords/GetSampling* support no resource-level permissions.',
    });

    // ----------------------------------------------------------------------------- failures
    this.buildFailureAnnouncements(topicKey);

    // ----------------------------------------------------------------------------- REST API
    this.api = this.buildApi(config);

    // ----------------------------------------------------------------------------- GuardDuty
    if (config.guardDutySeverity !== undefined) {
      this.buildGuardDutyPath(config, config.guardDutySeverity, architecture);
    }

    // ----------------------------------------------------------------------------- logs key policy
    this.logsKey.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchLogsForCordonGroups',
        principals: [new iam.ServicePrincipal(`logs.${Aws.REGION}.amazonaws.com`)],
        // The page's kms:Encrypt*, kms:Decrypt*, kms:ReEncrypt*, kms:GenerateDataKey* spelled out
        // for a symmetric key (the data key pair actions are not for log data). Its example also
        // lists kms:Describe*: DescribeKey carries no encryption context, so under this condition
        // it was never granted, and it is left out.
        actions: [
          'kms:Encrypt',
          'kms:Decrypt',
          'kms:ReEncryptFrom',
          'kms:ReEncryptTo',
          'kms:GenerateDataKey',
          'kms:GenerateDataKeyWithoutPlaintext',
        ],
        resources: ['*'],
        conditions: { ArnEquals: { 'kms:EncryptionContext:aws:logs:arn': [...this.logGroupArns] } },
      }),
    );

    // ----------------------------------------------------------------------------- outputs
    new CfnOutput(this, 'APIBaseURI', {
      description: 'Base URI of the SecurityResponse API (POST incidents, GET incidents/{id})',
      value: this.api.url,
    });
    new CfnOutput(this, 'StateMachineArn', { value: this.stateMachine.stateMachineArn });
    new CfnOutput(this, 'EvidenceBucketName', { value: this.evidenceBucket.bucketName });
    new CfnOutput(this, 'TopicArn', { value: this.topic.topicArn });
  }

  /**
   * A retained log group under a fixed name, encrypted with the logs key. The name is fixed so
   * that the key's policy can name the group's ARN (a generated name is known only after the
   * group exists, and the group refers to the key).
   */
  private encryptedLogGroup(id: string, logGroupName: string, config: CordonConfig): logs.LogGroup {
    this.logGroupArns.push(`arn:${Aws.PARTITION}:logs:${Aws.REGION}:${Aws.ACCOUNT_ID}:log-group:${logGroupName}`);
    return new logs.LogGroup(this, id, {
      logGroupName,
      encryptionKey: this.logsKey,
      retention: config.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
  }

  private buildApi(config: CordonConfig): apigw.RestApi {
    const accessLogGroup = this.encryptedLogGroup('ApiAccessLogGroup', `/cordon/${this.stackName}/api-access`, config);
    const api = new apigw.RestApi(this, 'Api', {
      restApiName: 'SecurityResponse',
      description: 'Cordon: start and follow the first response to a suspected compromised EC2 instance',
      endpointTypes: [apigw.EndpointType.REGIONAL],
      // Access and execution logging need the account's API Gateway CloudWatch role
      // (AWS::ApiGateway::Account, one per region). The construct creates and retains it, unless
      // context apiGatewayCloudWatchRole=false says that the account already has one.
      cloudWatchRole: config.apiGatewayCloudWatchRole,
      ...(config.apiGatewayCloudWatchRole ? { cloudWatchRoleRemovalPolicy: RemovalPolicy.RETAIN } : {}),
      deployOptions: {
        stageName: config.apiStageName,
        accessLogDestination: new apigw.LogGroupLogDestination(accessLogGroup),
        // Who asked for which response: the signed-in principal (IAM mode) or the API key.
        accessLogFormat: apigw.AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            requestTime: '$context.requestTime',
            ip: '$context.identity.sourceIp',
            caller: '$context.identity.caller',
            userArn: '$context.identity.userArn',
            apiKeyId: '$context.identity.apiKeyId',
            httpMethod: '$context.httpMethod',
            resourcePath: '$context.resourcePath',
            path: '$context.path',
            status: '$context.status',
            responseLength: '$context.responseLength',
            error: '$context.error.message',
            integrationStatus: '$context.integration.status',
            integrationError: '$context.integration.error',
            integrationLatency: '$context.integration.latency',
          }),
        ),
        // Execution logs without bodies: request bodies name instances and people.
        loggingLevel: apigw.MethodLoggingLevel.INFO,
        dataTraceEnabled: false,
        metricsEnabled: true,
        tracingEnabled: true,
        throttlingRateLimit: config.apiRateLimit,
        throttlingBurstLimit: config.apiBurstLimit,
      },
      defaultMethodOptions: config.apiKey
        ? { authorizationType: apigw.AuthorizationType.NONE, apiKeyRequired: true }
        : { authorizationType: apigw.AuthorizationType.IAM },
    });
    // The construct's own "Endpoint" output duplicates APIBaseURI.
    api.node.tryRemoveChild('Endpoint');
    if (config.apiGatewayCloudWatchRole) {
      Validations.of(api).acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
        reason: 'The account-wide API Gateway CloudWatch role serves every API of the region, not only this one, so it keeps the AWS-managed policy that API Gateway documents for it.',
      });
    }
    Validations.of(api).acknowledge({
      id: 'AwsSolutions-APIG3',
      reason: 'A small internal API behind IAM (SigV4) or an API key with stage throttling; a WAF web ACL is left to accounts that already run one (associate it with the stage).',
    });
    Validations.of(api).acknowledge({
      id: 'AwsSolutions-COG4',
      reason: config.apiKey
        ? 'API key mode (context apiKey=true) is an explicit choice for callers that cannot sign requests; the default deployment uses IAM authorization.'
        : 'Callers are AWS principals (responders, automation) and sign with SigV4: AWS_IAM authorization, no user pool.',
    });
    if (config.apiKey) {
      Validations.of(api).acknowledge({
        id: 'AwsSolutions-APIG4',
        reason: 'API key mode (context apiKey=true) was chosen explicitly for callers that cannot sign requests: every method requires the x-api-key header and the usage plan throttles it; the default deployment uses IAM authorization.',
      });
    }

    // The role API Gateway assumes to call Step Functions: start this state machine, read its executions.
    const executionArnPrefix = `arn:${Aws.PARTITION}:states:${Aws.REGION}:${Aws.ACCOUNT_ID}:execution:${this.stateMachine.stateMachineName}:`;
    const executions = `${executionArnPrefix}*`;
    const apiRole = new iam.Role(this, 'ApiRole', {
      path: ROLE_PATH,
      description: 'Cordon API: StartExecution and DescribeExecution on the Cordon state machine',
      assumedBy: new iam.ServicePrincipal('apigateway.amazonaws.com'),
      inlinePolicies: {
        'start-and-describe': new iam.PolicyDocument({
          statements: [
            new iam.PolicyStatement({
              sid: 'Start',
              actions: ['states:StartExecution'],
              resources: [this.stateMachine.stateMachineArn],
            }),
            new iam.PolicyStatement({
              sid: 'Describe',
              actions: ['states:DescribeExecution'],
              resources: [executions],
            }),
          ],
        }),
      },
    });
    Validations.of(apiRole).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${flat(this, executions)}]`,
      reason: 'Execution names are chosen per request (incident_id or the request id); the wildcard covers only executions of the Cordon state machine.',
    });

    const model = api.addModel('IncidentRequest', {
      modelName: 'IncidentRequest',
      contentType: 'application/json',
      description: 'POST /incidents body',
      schema: incidentRequestSchema(config.collectionMaxBudgetSeconds),
    });
    const validator = api.addRequestValidator('Validator', {
      requestValidatorName: 'body-and-parameters',
      validateRequestBody: true,
      validateRequestParameters: true,
    });

    const incidents = api.root.addResource('incidents');
    incidents.addMethod(
      'POST',
      new apigw.AwsIntegration({
        service: 'states',
        action: 'StartExecution',
        integrationHttpMethod: 'POST',
        options: {
          credentialsRole: apiRole,
          // Only application/json reaches the template; anything else is 415.
          passthroughBehavior: apigw.PassthroughBehavior.NEVER,
          requestTemplates: { 'application/json': startExecutionRequest(this.stateMachine.stateMachineArn) },
          integrationResponses: [
            { statusCode: '202', responseTemplates: { 'application/json': startExecutionResponse } },
            // Step Functions answers every client-side error, throttling included, with HTTP 400;
            // the template tells them apart by __type (409, 429, 400 or 500).
            { statusCode: '400', selectionPattern: '4\\d{2}', responseTemplates: { 'application/json': startExecutionError } },
            { statusCode: '500', selectionPattern: '5\\d{2}', responseTemplates: { 'application/json': '{"error": "StepFunctionsError", "message": "Step Functions failed to start the response; retry"}' } },
          ],
        },
      }),
      {
        requestModels: { 'application/json': model },
        requestValidator: validator,
        methodResponses: ['202', '400', '409', '429', '500'].map((statusCode) => ({ statusCode })),
      },
    );

    const incident = incidents.addResource('{id}');
    incident.addMethod(
      'GET',
      new apigw.AwsIntegration({
        service: 'states',
        action: 'DescribeExecution',
        integrationHttpMethod: 'POST',
        options: {
          credentialsRole: apiRole,
          passthroughBehavior: apigw.PassthroughBehavior.NEVER,
          requestTemplates: { 'application/json': describeExecutionRequest(executionArnPrefix) },
          integrationResponses: [
            { statusCode: '200', responseTemplates: { 'application/json': describeExecutionResponse } },
            { statusCode: '400', selectionPattern: '4\\d{2}', responseTemplates: { 'application/json': describeExecutionError } },
            { statusCode: '500', selectionPattern: '5\\d{2}', responseTemplates: { 'application/json': '{"error": "StepFunctionsError", "message": "Step Functions failed to describe the response; retry"}' } },
          ],
        },
      }),
      {
        requestParameters: { 'method.request.path.id': true },
        requestValidator: validator,
        methodResponses: ['200', '400', '404', '429', '500'].map((statusCode) => ({ statusCode })),
      },
    );

    if (config.apiKey) {
      const key = api.addApiKey('ApiKey', { description: 'Cordon SecurityResponse API key' });
      const plan = api.addUsagePlan('UsagePlan', {
        name: 'cordon',
        throttle: { rateLimit: config.apiRateLimit, burstLimit: config.apiBurstLimit },
        apiStages: [{ api, stage: api.deploymentStage }],
      });
      plan.addApiKey(key);
      new CfnOutput(this, 'ApiKeyId', {
        description: 'aws apigateway get-api-key --include-value --api-key <id> shows the x-api-key value',
        value: key.keyId,
      });
    }
    return api;
  }

  /**
   * A failed response cannot announce itself: a containment step that fails fails the execution at
   * its own state, so that a redrive reruns it. Failures are announced from outside:
   * - an EventBridge rule on the state machine's "Step Functions Execution Status Change" events
   *   (https://docs.aws.amazon.com/step-functions/latest/dg/eventbridge-integration.html) for
   *   FAILED, TIMED_OUT and ABORTED invokes notify, which reads the history and publishes; events
   *   that cannot be delivered after the retries go to an encrypted dead-letter queue;
   * - a CloudWatch alarm on the state machine's ExecutionsFailed/TimedOut/Aborted metrics
   *   (https://docs.aws.amazon.com/step-functions/latest/dg/procedure-cw-metrics.html) publishes to the
   *   same topic, so that a failure is seen even when notify itself is broken. The topic's key lets
   *   CloudWatch use it (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services).
   */
  private buildFailureAnnouncements(topicKey: kms.Key): void {
    const deadLetters = new sqs.Queue(this, 'FailureRuleDeadLetters', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(deadLetters).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue of the failure rule target (EventBridge DLQs are not visible to the rule as an SQS redrive policy).',
    });
    new events.Rule(this, 'FailureRule', {
      description: 'Cordon: announce a response that failed, timed out or was aborted',
      eventPattern: {
        source: ['aws.states'],
        detailType: ['Step Functions Execution Status Change'],
        detail: {
          stateMachineArn: [this.stateMachine.stateMachineArn],
          status: ['FAILED', 'TIMED_OUT', 'ABORTED'],
        },
      },
      targets: [
        new targets.LambdaFunction(this.functions.notify, {
          deadLetterQueue: deadLetters,
          retryAttempts: 8,
          maxEventAge: Duration.hours(2),
        }),
      ],
    });

    topicKey.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsPublish',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: ['*'],
        conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } },
      }),
    );
    const alarm = new cloudwatch.Alarm(this, 'FailedResponsesAlarm', {
      alarmDescription:
        'Cordon: a response failed, timed out or was aborted. Read the CONTAINMENT FAILED message (if notify could send it), fix the cause, redrive the execution.',
      metric: new cloudwatch.MathExpression({
        expression: 'failed + timedout + aborted',
        usingMetrics: {
          failed: this.stateMachine.metricFailed({ statistic: 'Sum', period: Duration.minutes(1) }),
          timedout: this.stateMachine.metricTimedOut({ statistic: 'Sum', period: Duration.minutes(1) }),
          aborted: this.stateMachine.metricAborted({ statistic: 'Sum', period: Duration.minutes(1) }),
        },
        period: Duration.minutes(1),
      }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    alarm.addAlarmAction(new cwActions.SnsAction(this.topic));
  }

  /**
   * GuardDuty findings start responses through a queue, at most `maxConcurrentResponses` running:
   * Step Functions has no cap on concurrent Standard executions, and a storm of findings must not
   * start them all at once (lib/concurrency.ts; ARCHITECTURE.md "A storm of findings").
   *
   * rule ──SendMessage──► findings queue (FIFO, one message group) ──event source mapping──►
   * dispatcher (steps/dispatch): counts RUNNING executions, starts findings in order while fewer
   * than the bound run, returns the rest as batchItemFailures (they stay queued).
   *
   * - One message group, so the queue hands the dispatcher one batch at a time, in order: "For FIFO
   *   queues, concurrent invocations are capped at the number of message group IDs or the maximum
   *   concurrency setting, whichever is lower"
   *   (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html). Two dispatchers can
   *   therefore never both see one free slot and both take it.
   * - An EventBridge target FIFO queue needs a message group id and content-based deduplication
   *   (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_SqsParameters.html).
   * - Retention 14 days (the SQS maximum); after FINDINGS_MAX_RECEIVE_COUNT receives a finding
   *   goes to a FIFO dead-letter queue (a FIFO queue's DLQ must be FIFO). The queue's visibility
   *   timeout is six times the function timeout, as Lambda advises for an SQS event source
   *   (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html).
   * - Deliveries the rule cannot make go to its own (standard) dead-letter queue, as before. An
   *   alarm on both dead-letter queues tells the team that a finding was not started.
   */
  private buildGuardDutyPath(config: CordonConfig, severity: number, architecture: lambda.Architecture): void {
    const deadLetters = new sqs.Queue(this, 'GuardDutyDeadLetters', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(deadLetters).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue of the GuardDuty rule target (EventBridge DLQs are not visible to the rule as an SQS redrive policy).',
    });
    const notStarted = new sqs.Queue(this, 'GuardDutyFindingsDeadLetters', {
      fifo: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    const findings = new sqs.Queue(this, 'GuardDutyFindings', {
      fifo: true,
      contentBasedDeduplication: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      visibilityTimeout: Duration.seconds(6 * DISPATCH_TIMEOUT_SECONDS),
      deadLetterQueue: { queue: notStarted, maxReceiveCount: FINDINGS_MAX_RECEIVE_COUNT },
    });

    new events.Rule(this, 'GuardDutyRule', {
      description: `Cordon: queue a response for GuardDuty EC2 findings of severity ${severity} or more`,
      eventPattern: {
        source: ['aws.guardduty'],
        detailType: ['GuardDuty Finding'],
        detail: {
          resource: { resourceType: ['Instance'] },
          severity: events.Match.greaterThanOrEqual(severity),
        },
      },
      targets: [
        // The construct adds the queue policy that lets events.amazonaws.com send, from this rule
        // only (aws:SourceArn); SSE-SQS needs no key policy.
        new targets.SqsQueue(findings, {
          messageGroupId: 'guardduty',
          deadLetterQueue: deadLetters,
          retryAttempts: 8,
          maxEventAge: Duration.hours(2),
          // The state machine's input as before, plus the finding id, which the dispatcher makes
          // the execution name (and so the incident id) and takes out of the input.
          message: events.RuleTargetInput.fromObject({
            finding_id: events.EventField.fromPath('$.detail.id'),
            instance_id: events.EventField.fromPath('$.detail.resource.instanceDetails.instanceId'),
            reason: events.EventField.fromPath('$.detail.type'),
            requested_by: 'guardduty',
          }),
        }),
      ],
    });

    const logGroup = this.encryptedLogGroup(`${DISPATCH.id}LogGroup`, `/cordon/${this.stackName}/${DISPATCH.name}`, config);
    const statements = DISPATCH.statements({
      stateMachineArn: this.stateMachine.stateMachineArn,
      findingsQueueArn: findings.queueArn,
    });
    const role = new iam.Role(this, `${DISPATCH.id}Role`, {
      path: ROLE_PATH,
      description: 'Cordon GuardDuty dispatcher',
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      inlinePolicies: {
        [`cordon-${DISPATCH.name}`]: new iam.PolicyDocument({
          statements: [
            ...statements.map(toPolicyStatement),
            new iam.PolicyStatement({
              sid: 'OwnLogGroup',
              actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
              resources: [logGroup.logGroupArn],
            }),
          ],
        }),
      },
    });
    acknowledgeWildcards(role, statements);
    const dispatcher = new lambda.Function(this, `${DISPATCH.id}Function`, {
      description: DISPATCH.description,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture,
      handler: 'bootstrap',
      code: stepCode(config, DISPATCH.binary),
      memorySize: 128,
      timeout: Duration.seconds(DISPATCH_TIMEOUT_SECONDS),
      // At least the mapping's maximum concurrency, or Lambda throttles the mapping's invocations.
      reservedConcurrentExecutions: config.reservedConcurrency ? DISPATCH_MAX_CONCURRENCY : undefined,
      role,
      logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: lambda.SystemLogLevel.WARN,
      environment: {
        STATE_MACHINE_ARN: this.stateMachine.stateMachineArn,
        QUEUE_URL: findings.queueUrl,
        MAX_RUNNING_RESPONSES: String(config.maxConcurrentResponses),
        RETRY_DELAY_SECONDS: String(DISPATCH_RETRY_DELAY_SECONDS),
      },
    });
    // The L2 mapping, not SqsEventSource: that one would also grant GetQueueUrl and
    // ChangeMessageVisibility through grantConsumeMessages; the role above has what is needed.
    new lambda.EventSourceMapping(this, 'GuardDutyDispatch', {
      target: dispatcher,
      eventSourceArn: findings.queueArn,
      batchSize: 10, // the maximum for a FIFO queue
      reportBatchItemFailures: true,
      maxConcurrency: DISPATCH_MAX_CONCURRENCY,
    });

    const alarm = new cloudwatch.Alarm(this, 'GuardDutyFindingsNotStartedAlarm', {
      alarmDescription:
        'Cordon: a GuardDuty finding was not started (the rule could not queue it, or no dispatcher could start it). Read it from the dead-letter queue, fix the cause, move it back (SQS dead-letter queue redrive).',
      metric: new cloudwatch.MathExpression({
        expression: 'undelivered + notstarted',
        usingMetrics: {
          undelivered: deadLetters.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(5) }),
          notstarted: notStarted.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(5) }),
        },
        period: Duration.minutes(5),
      }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    alarm.addAlarmAction(new cwActions.SnsAction(this.topic));
  }
}

// -------------------------------------------------------------------------------------------------

function toPolicyStatement(s: StepStatement): iam.PolicyStatement {
  return new iam.PolicyStatement({
    sid: s.sid,
    effect: s.effect === 'Deny' ? iam.Effect.DENY : iam.Effect.ALLOW,
    actions: [...s.actions],
    resources: [...s.resources],
    conditions: s.conditions,
  });
}

/** A resource as cdk-nag names it in a finding (`arn:<AWS::Partition>:...`). */
function flat(scope: IConstruct, resource: string): string {
  return flattenCfnReference(Stack.of(scope).resolve(resource));
}

/**
 * Acknowledges the cdk-nag AwsSolutions-IAM5 finding of every wildcard resource of a step, with
 * that statement's `why` as the written reason: the reason is the table, not a blanket waiver.
 */
function acknowledgeWildcards(role: iam.Role, statements: readonly StepStatement[]): void {
  const reasons = new Map<string, string[]>();
  for (const s of statements) {
    if (s.effect === 'Deny') continue; // cdk-nag reports on Allow statements only
    for (const resource of s.resources) {
      const name = flat(role, resource);
      if (!name.includes('*')) continue;
      const id = `AwsSolutions-IAM5[Resource::${name}]`;
      reasons.set(id, [...(reasons.get(id) ?? []), `${s.sid}: ${s.why}`]);
    }
  }
  for (const [id, why] of reasons) {
    Validations.of(role).acknowledge({ id, reason: why.join(' / ') });
  }
}

let placeholderDir: string | undefined;

/**
 * The step's deployment package: cargo lambda's output, or with placeholderCode a dummy bootstrap
 * (so that tests and template linting never build Rust).
 */
function stepCode(config: CordonConfig, binary: string): lambda.Code {
  if (config.placeholderCode) {
    if (placeholderDir === undefined) {
      placeholderDir = mkdtempSync(join(tmpdir(), 'cordon-placeholder-'));
      writeFileSync(
        join(placeholderDir, 'bootstrap'),
        '#!/bin/sh\necho "placeholder code: deploy after cargo lambda build --release --arm64" >&2\nexit 1\n',
        { mode: 0o755 },
      );
    }
    return lambda.Code.fromAsset(placeholderDir);
  }
  const dir = join(config.lambdaDir, binary);
  if (!existsSync(join(dir, 'bootstrap'))) {
    throw new Error(
      `${join(dir, 'bootstrap')} does not exist: run \`cargo lambda build --release --arm64\` at the repository root first ` +
        '(or synthesize with -c placeholderCode=true to check the template only)',
    );
  }
  return lambda.Code.fromAsset(dir);
}
