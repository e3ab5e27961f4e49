"""Which IAM actions an AWS API call needs: the operation name is not always the action name.

By default a call ``<Operation>`` of a service whose SigV4 signing name is ``<prefix>`` needs the
action ``<prefix>:<Operation>``: that holds for EC2, IAM, SSM, SNS, SQS, Auto Scaling, Elastic Load
Balancing and Step Functions, whose signing names are their IAM service prefixes
(https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html).
The exceptions are listed below, each with the page that states it; a call can need more than one
action (a dependent action, such as ``iam:PassRole`` for the role that an EC2 call hands over).
"""

from __future__ import annotations

from urllib.parse import parse_qs

# S3 operation -> actions, from the "Permissions" section of each operation's API reference page
# (https://docs.aws.amazon.com/AmazonS3/latest/API/API_<Operation>.html) and the Service
# Authorization Reference for S3 (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html).
S3_ACTIONS: dict[str, tuple[str, ...]] = {
    # API_HeadObject: "To use HEAD, you must have the s3:GetObject permission."
    "HeadObject": ("s3:GetObject",),
    # API_ListObjectsV2 / API_ListObjects: "You must have permission to perform the s3:ListBucket action."
    "ListObjectsV2": ("s3:ListBucket",),
    "ListObjects": ("s3:ListBucket",),
    # API_HeadBucket: "you must have permissions to perform the s3:ListBucket action."
    "HeadBucket": ("s3:ListBucket",),
    # API_ListObjectVersions: "you must have permission to perform the s3:ListBucketVersions action."
    "ListObjectVersions": ("s3:ListBucketVersions",),
    # API_ListMultipartUploads: s3:ListBucketMultipartUploads.
    "ListMultipartUploads": ("s3:ListBucketMultipartUploads",),
    # mpuoverview.html#mpuAndPermissions: initiating, uploading parts and completing a multipart
    # upload all need s3:PutObject; listing parts needs s3:ListMultipartUploadParts.
    "CreateMultipartUpload": ("s3:PutObject",),
    "UploadPart": ("s3:PutObject",),
    "CompleteMultipartUpload": ("s3:PutObject",),
    "ListParts": ("s3:ListMultipartUploadParts",),
    # API_CopyObject: s3:GetObject on the source (see _s3 for a versioned source) and s3:PutObject on the target.
    "CopyObject": ("s3:PutObject", "s3:GetObject"),
    # API_GetObjectAttributes: without a version ID, s3:GetObject and s3:GetObjectAttributes.
    "GetObjectAttributes": ("s3:GetObject", "s3:GetObjectAttributes"),
    # API_DeleteObjects: "you must have the s3:DeleteObject permission" (per key).
    "DeleteObjects": ("s3:DeleteObject",),
    # The object-lock configuration operations are authorized as bucket actions (list_amazons3.html).
    "GetObjectLockConfiguration": ("s3:GetBucketObjectLockConfiguration",),
    "PutObjectLockConfiguration": ("s3:PutBucketObjectLockConfiguration",),
    # API_ListBuckets: s3:ListAllMyBuckets.
    "ListBuckets": ("s3:ListAllMyBuckets",),
}

# With a version ID the read actions become their *Version counterparts: API_GetObject and
# API_HeadObject ("you need the s3:GetObjectVersion permission" to read a specific version),
# API_GetObjectAttributes ("If you pass a version ID ... s3:GetObjectVersion and
# s3:GetObjectVersionAttributes"), API_DeleteObject (s3:DeleteObjectVersion).
S3_VERSIONED = {
    "s3:GetObject": "s3:GetObjectVersion",
    "s3:GetObjectAttributes": "s3:GetObjectVersionAttributes",
    "s3:DeleteObject": "s3:DeleteObjectVersion",
}

# Other services whose API operation and IAM action differ.
RENAMED: dict[tuple[str, str], tuple[str, ...]] = {
    # list_awslambda.html: the Invoke API is authorized as lambda:InvokeFunction.
    ("lambda", "Invoke"): ("lambda:InvokeFunction",),
    # sqs-batch-api.html: "You cannot set permissions explicitly for SendMessageBatch,
    # DeleteMessageBatch, or ChangeMessageVisibilityBatch. Instead, setting permissions for
    # SendMessage, DeleteMessage, or ChangeMessageVisibility sets permissions for the corresponding
    # batch versions of the actions."
    ("sqs", "SendMessageBatch"): ("sqs:SendMessage",),
    ("sqs", "DeleteMessageBatch"): ("sqs:DeleteMessage",),
    ("sqs", "ChangeMessageVisibilityBatch"): ("sqs:ChangeMessageVisibility",),
}

# Dependent actions: calls that also need a permission on something they pass along.
# EC2 "Grant permissions to attach an IAM role to an instance"
# (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/permission-to-pass-iam-roles.html):
# associating or replacing an instance profile needs iam:PassRole for the profile's role.
DEPENDENT: dict[tuple[str, str], tuple[str, ...]] = {
    ("ec2", "AssociateIamInstanceProfile"): ("iam:PassRole",),
    ("ec2", "ReplaceIamInstanceProfileAssociation"): ("iam:PassRole",),
}


def iam_actions(
    service: str, operation: str, headers: dict[str, str] | None = None, query_string: str = ""
) -> list[str]:
    """The IAM actions that ``service``/``operation`` needs (empty when the operation is unknown).

    ``headers`` (lower-case names) and ``query_string`` refine S3 operations: a version ID, a copy
    source with a version ID, tagging or an ACL in a PutObject.
    """
    if not service or not operation or " " in operation:
        return []  # unclassified request (``<METHOD> <path>``): nothing to check
    if service == "s3":
        actions = _s3(operation, headers or {}, query_string)
    else:
        actions = list(RENAMED.get((service, operation), (f"{service}:{operation}",)))
    actions += DEPENDENT.get((service, operation), ())
    return list(dict.fromkeys(actions))


def _s3(operation: str, headers: dict[str, str], query_string: str) -> list[str]:
    actions = list(S3_ACTIONS.get(operation, (f"s3:{operation}",)))
    versioned = "versionId" in parse_qs(query_string, keep_blank_values=True)
    if versioned and operation in ("GetObject", "HeadObject", "GetObjectAttributes", "DeleteObject"):
        actions = [S3_VERSIONED.get(a, a) for a in actions]
    if operation == "CopyObject" and "versionId=" in headers.get("x-amz-copy-source", ""):
        actions = ["s3:PutObject", "s3:GetObjectVersion"]
    if operation in ("PutObject", "CopyObject", "CreateMultipartUpload"):
        # API_PutObject: setting the tag set needs s3:PutObjectTagging, an ACL s3:PutObjectAcl.
        if headers.get("x-amz-tagging"):
            actions.append("s3:PutObjectTagging")
        if headers.get("x-amz-acl") or any(h.startswith("x-amz-grant-") for h in headers):
            actions.append("s3:PutObjectAcl")
    return actions
