// How many responses may run at once, and why: the default of context `maxConcurrentResponses`.
//
// A storm of findings must neither starve Cordon (other functions of the account using up the
// Lambda concurrency it needs) nor flood the account (so many responses at once that EC2
// throttles every one of them, and the account's own workloads with them). Each step function
// therefore gets a reserved concurrency of `maxConcurrentResponses` (an execution invokes each
// function at most once at a time: the Contain branches are four different functions, and no Map
// fans one out; the one exception is notify, which the failure rule also invokes, asynchronously,
// for each failed execution: a throttled asynchronous invocation is retried by Lambda, and a
// throttled Task by its Lambda.TooManyRequestsException retrier), and the GuardDuty path starts
// no execution while that many run (steps/dispatch).
//
// EC2 throttles per account and Region, per API action, with a token bucket: "Each request that
// you make removes one token from the API's bucket"; a mutating action that is neither
// resource-intensive nor uncategorized has a bucket of 50 tokens refilled at 5 per second
// (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html, "Request token bucket
// sizes and refill rates"). Uncategorized ones used here have larger buckets: CreateSnapshots,
// ModifyNetworkInterfaceAttribute, Associate/DisassociateIamInstanceProfile and
// ModifyInstanceMetadataOptions 100 / 5, CreateTags 100 / 10.
//
// Mutating EC2 calls of one response, read from the local stack's request log of the happy path
// (integration-tests/test_incident_response.py, an instance with two interfaces in two subnets,
// the first response in its VPC, `sg+nacl`): CreateNetworkAclEntry 8 (the instance's addresses,
// both directions, in the network ACL of each subnet that sees its packets), ModifyNetworkInterface-
// Attribute 6, CreateTags 5, ModifyInstanceAttribute 3, CreateSecurityGroup 2 (first response per
// VPC only), DisassociateIamInstanceProfile 2, AuthorizeSecurityGroupEgress, AuthorizeSecurity-
// GroupIngress, RevokeSecurityGroupEgress, AssociateIamInstanceProfile, CreateSnapshots,
// ModifyInstanceMetadataOptions 1 each: 32 in all, spread over 12 buckets.
//
// The non-mutating calls fit more easily: 6 DescribeInstances and 6 DescribeSecurityGroups at most,
// against 50 tokens even when a request takes the smaller "unfiltered and unpaginated" bucket.
//
// The bucket that empties first is CreateNetworkAclEntry's: 50 tokens, 8 per response. So 6
// responses started at the same moment fit in the bucket without one RequestLimitExceeded, and
// after that the refill (5 per second) sustains a response every 1.6 s, far faster than one
// completes. More at once is not faster: the seventh would wait for tokens (the steps' SDK retries
// and the state machine's `Transient` retries absorb it), and every other caller of the account's
// CreateNetworkAclEntry would wait with it. An instance with more interfaces or addresses makes
// more CreateNetworkAclEntry calls; the bound stays safe because the calls are retried, it only
// stops being throttle-free.

/** EC2's request token bucket for a mutating action: maximum capacity and refill per second. */
export const EC2_MUTATING_BUCKET = { capacity: 50, refillPerSecond: 5 } as const;

/** The most calls one response makes to a single mutating EC2 action (CreateNetworkAclEntry). */
export const MUTATING_CALLS_PER_RESPONSE = 8;

/** 6: the responses whose mutating calls fit in EC2's buckets when they all start at once. */
export const DEFAULT_MAX_CONCURRENT_RESPONSES = Math.floor(
  EC2_MUTATING_BUCKET.capacity / MUTATING_CALLS_PER_RESPONSE,
);

/**
 * Lambda keeps 100 of the account's concurrency unreserved: "You can reserve up to the
 * Unreserved account concurrency value minus 100"
 * (https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html). The default
 * account quota is 1,000 per Region (new accounts may start lower).
 */
export const LAMBDA_UNRESERVED_MINIMUM = 100;

/**
 * The GuardDuty dispatcher's event source mapping: `MaximumConcurrency` (the minimum Lambda
 * accepts, 2: https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-lambda-eventsourcemapping-scalingconfig.html),
 * and its reserved concurrency, which must not be below it ("Don't configure maximum concurrency
 * above reserved concurrency": https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html).
 */
export const DISPATCH_MAX_CONCURRENCY = 2;

/**
 * Seconds before a finding that found every slot taken is offered to the dispatcher again
 * (it sets the message's visibility; steps/dispatch). With the findings queue's maxReceiveCount
 * (1,000, SQS's maximum) a finding waits up to about 5.5 hours for a slot before it goes to the
 * dead-letter queue, whose alarm tells the team.
 */
export const DISPATCH_RETRY_DELAY_SECONDS = 20;
export const FINDINGS_MAX_RECEIVE_COUNT = 1000;

/** The dispatcher's timeout: one ListExecutions, up to ten StartExecution, one visibility change. */
export const DISPATCH_TIMEOUT_SECONDS = 30;

/** Reserved concurrency of all Cordon functions together, for the README's quota check. */
export function totalReserved(maxConcurrentResponses: number, stepFunctions: number, withDispatcher: boolean): number {
  return maxConcurrentResponses * stepFunctions + (withDispatcher ? DISPATCH_MAX_CONCURRENCY : 0);
}
