"""Pydantic models of the GeoCluster custom resource: the single source of its CRD schema.

Every field carries a description, a default and its bounds or enum, so the generated CRD
explains itself in ``kubectl explain``. Unknown fields are rejected (``extra="forbid"``) and
:func:`parse_spec` turns pydantic's errors into one message that names each bad field by its
camelCase path. The CRD itself is generated from these models in :mod:`geocluster.crd`.
"""

from __future__ import annotations

import ipaddress
import zoneinfo
from datetime import datetime
from typing import Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "geo.geocluster.io"
VERSION = "v1alpha1"
KIND = "GeoCluster"
PLURAL = "geoclusters"
SINGULAR = "geocluster"
SHORT_NAMES = ["gc"]
API_VERSION = f"{GROUP}/{VERSION}"

GEOSERVER_PORT = 9851
DEFAULT_IMAGE = "ghcr.io/geocluster/geocluster:0.1.0"
CRON_PATTERN = r"^(\s*\S+(\s+\S+){4}\s*)?$"  # or "": off (a merge-patch null would restore the default)


class SpecError(ValueError):
    """A GeoCluster spec that can never work as written (reported as InvalidSpec)."""


def _check_cron(value: str | None) -> str | None:
    """Accept only standard 5-field cron expressions (as Kubernetes CronJob does); "" and
    null mean off."""
    if value is None or not value.strip():
        return None
    if len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(f"not a valid 5-field cron expression: {value!r}")
    return value


class _Model(BaseModel):
    """Base: camelCase aliases, Python names accepted too, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )


class SecretKeyRef(_Model):
    """A key of a Secret in the GeoCluster's namespace."""

    name: str = Field(description="Name of the Secret.", min_length=1, max_length=253)
    key: str = Field(default="password", description="Key inside the Secret.", min_length=1, max_length=253)


class StorageSpec(_Model):
    """Persistent volume for each member's AOF."""

    size: str = Field(
        default="1Gi",
        description="Requested size of each member's volume (a Kubernetes quantity).",
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$",
    )
    storage_class_name: str | None = Field(
        default=None, description="StorageClass of the volumes; the cluster default when unset."
    )


# geoserver flags the operator (and the local runtime) set itself: extraArgs may not repeat
# them, or a member could listen elsewhere, drop its password or follow another leader.
OWNED_FLAGS = {
    "--host": "the operator sets it",
    "--port": "the operator sets it",
    "--dir": "the operator sets it",
    "--follow": "the operator sets it on followers",
    "--requirepass": "use spec.server.authSecretRef or generatePassword",
    "--leaderauth": "use spec.server.authSecretRef or generatePassword",
    "--appendfsync": "use spec.server.appendfsync",
    "--metrics-addr": "use spec.metrics",
    "--tls-port": "use spec.tls",
    "--tls-cert-file": "use spec.tls",
    "--tls-key-file": "use spec.tls",
    "--tls-ca-cert-file": "use spec.tls",
    "--tls-auth-clients": "use spec.tls.clientAuth",
    "--tls-replication": "use spec.tls",
    "--tls-reload-interval": "use spec.tls",
}
OWNED_SHORT_FLAGS = {"-H": "--host", "-p": "--port", "-d": "--dir"}
_NO_VALUE_SHORT = set("qv")  # geoserver's short flags without a value (-q, -v) may be bundled


def owned_flag(arg: str) -> str | None:
    """The owned long flag ``arg`` sets (also as ``--flag=value``, an abbreviation argparse
    would expand, or a bundled/attached short form such as ``-p9851``, ``-qp``), else None."""
    if arg.startswith("--"):
        name = arg.partition("=")[0]
        if len(name) > 2:
            return next((flag for flag in OWNED_FLAGS if flag.startswith(name)), None)
        return None
    if arg.startswith("-") and len(arg) > 1:
        for letter in arg[1:]:
            if f"-{letter}" in OWNED_SHORT_FLAGS:
                return OWNED_SHORT_FLAGS[f"-{letter}"]
            if letter not in _NO_VALUE_SHORT:
                return None  # the rest is this flag's attached value
    return None


class ServerSpec(_Model):
    """geoserver settings shared by the leader and the followers."""

    appendfsync: Literal["always", "everysec", "no"] = Field(
        default="everysec", description="How often the AOF is fsynced (as in Tile38/Redis)."
    )
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the password clients (and followers) must AUTH with. "
        "When unset, see generatePassword.",
    )
    generate_password: bool = Field(
        default=True,
        description="Without authSecretRef: create the Secret <name>-auth (key password, 43 random "
        "characters, owned by this GeoCluster, never rotated by the operator) and require that "
        "password. false runs the members without a password: anyone the NetworkPolicy admits "
        "can read, write and reconfigure them. Ignored when authSecretRef is set, and by "
        "`geocluster up` (local members listen on 127.0.0.1 only).",
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="Extra command-line arguments appended to geoserver's. Flags the operator "
        "sets (--host/-H, --port/-p, --dir/-d, --follow, --requirepass, --leaderauth, "
        "--appendfsync, --metrics-addr and every --tls-* flag) are refused.",
    )

    @field_validator("extra_args")
    @classmethod
    def _no_owned_flags(cls, value: list[str]) -> list[str]:
        bad = [(arg, flag) for arg in value if (flag := owned_flag(arg))]
        if bad:
            why = "; ".join(f"{arg!r} sets {flag} ({OWNED_FLAGS[flag]})" for arg, flag in bad)
            raise ValueError(f"flags the operator owns cannot be overridden: {why}")
        return value


class SizeTrigger(_Model):
    """Shrink when the AOF has grown to growthFactor times its size after the last shrink."""

    growth_factor: float = Field(
        default=2.0, gt=1.0, le=100.0, description="k: shrink when aof_size >= k * size after."
    )
    min_size_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="The size trigger never fires below this AOF size (it is also its threshold "
        "before a first shrink); cron and manual shrinks ignore it.",
    )


class AofShrinkSpec(_Model):
    """When the leader compacts its AOF (AOFSHRINK)."""

    schedule: str | None = Field(
        default="0 3 * * *",
        pattern=CRON_PATTERN,
        description='5-field cron schedule of shrinks; "" disables scheduled shrinks (null does '
        "too on create, but a merge-patch null, as kubectl apply sends, restores the default).",
    )
    time_zone: str = Field(default="UTC", description="IANA time zone the schedule is read in.")
    size_trigger: SizeTrigger | None = Field(
        default=None, description="Also shrink when the AOF has grown past a factor; null = off."
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _check_cron(value)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class FollowerResyncSpec(_Model):
    """When followers are made to reload their dataset from the leader (RESYNC)."""

    after_shrink: bool = Field(
        default=True, description="Resync every follower, one at a time, after each shrink."
    )
    schedule: str | None = Field(
        default=None,
        pattern=CRON_PATTERN,
        description="Optional 5-field cron schedule of resync rounds.",
    )
    max_concurrent: int = Field(
        default=1, ge=1, le=1, description="Followers resynced at once (only 1 is supported)."
    )
    timeout_seconds: int = Field(
        default=600, ge=5, le=86400, description="A resync not done by then counts as failed."
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _check_cron(value)


class DivergenceSpec(_Model):
    """How a follower that drifts from its leader is detected and repaired."""

    tolerance_ratio: float = Field(
        default=0.1,
        ge=0.0,
        le=100.0,
        description="Relative aof_size difference to the leader tolerated (0.1 = 10%).",
    )
    tolerance_bytes: int = Field(
        default=1024 * 1024,
        ge=0,
        description="Absolute aof_size difference tolerated; both tolerances must be exceeded.",
    )
    grace_period_seconds: int = Field(
        default=120, ge=0, le=86400, description="How long a finding must persist before repair."
    )
    probe_interval_seconds: int = Field(
        default=30, ge=1, le=3600, description="How often members are probed."
    )
    ladder: list[Literal["resync", "restart"]] = Field(
        default_factory=lambda: ["resync", "restart"],
        max_length=8,
        description="Repairs tried in order; when exhausted the operator gives up (Degraded).",
    )
    max_repairs_per_hour: int = Field(
        default=3, ge=0, le=1000, description="Repairs allowed per rolling hour, all members."
    )


class PdbSpec(_Model):
    """PodDisruptionBudget over all members."""

    enabled: bool = Field(default=True, description="Create a PodDisruptionBudget.")
    max_unavailable: int = Field(
        default=1, ge=0, description="Members that voluntary disruptions may take down at once."
    )


class SchedulingSpec(_Model):
    """Where members run."""

    anti_affinity: Literal["none", "preferred", "required"] = Field(
        default="preferred", description="Spread members across nodes (pod anti-affinity)."
    )
    topology_spread: bool = Field(
        default=False, description="Add a zone topologySpreadConstraint (ScheduleAnyway)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels members must run on."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations (core/v1 Toleration objects)."
    )
    pod_disruption_budget: PdbSpec = Field(
        default_factory=PdbSpec, description="PodDisruptionBudget settings."
    )


class SecurityContextSpec(_Model):
    """Overrides of the non-root defaults (merged over them)."""

    pod: dict[str, Any] | None = Field(
        default=None, description="Fields merged over the pod securityContext defaults."
    )
    container: dict[str, Any] | None = Field(
        default=None, description="Fields merged over the container securityContext defaults."
    )


class MetricsSpec(_Model):
    """geoserver's Prometheus endpoint."""

    enabled: bool = Field(default=True, description="Serve Prometheus metrics.")
    port: int = Field(default=9852, ge=1, le=65535, description="Metrics port in each pod (not 9851).")

    @field_validator("port")
    @classmethod
    def _not_the_server_port(cls, value: int) -> int:
        if value == GEOSERVER_PORT:
            raise ValueError(f"{GEOSERVER_PORT} is geoserver's own port; pick another")
        return value


class LabelSelectorRequirement(_Model):
    """One matchExpressions entry of a label selector (meta/v1 LabelSelectorRequirement)."""

    key: str = Field(description="Label key.", min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How key and values relate."
    )
    values: list[str] | None = Field(
        default=None, description="Values for In/NotIn; must be empty for Exists/DoesNotExist."
    )


class LabelSelector(_Model):
    """A label selector (meta/v1 LabelSelector); empty selects everything."""

    match_labels: dict[str, str] | None = Field(default=None, description="Labels that must all match.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, description="Requirements that must all hold."
    )


class IPBlock(_Model):
    """A CIDR range (networking/v1 IPBlock)."""

    cidr: str = Field(description='Allowed range, e.g. "10.0.0.0/8".')
    except_: list[str] | None = Field(
        default=None, alias="except", description="Ranges inside cidr that are not allowed."
    )

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"not a CIDR: {value!r}") from exc
        return value

    @field_validator("except_")
    @classmethod
    def _excepts(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            cls._cidr(item)
        return value


class NetworkPolicyPeer(_Model):
    """Who may connect (networking/v1 NetworkPolicyPeer): pods by label (podSelector alone: this
    namespace; with namespaceSelector: those namespaces), whole namespaces, or an ipBlock."""

    pod_selector: LabelSelector | None = Field(default=None, description="Pods with these labels.")
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces with these labels ({} = every namespace)."
    )
    ip_block: IPBlock | None = Field(default=None, description="Addresses in a CIDR range.")

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if self.ip_block is not None and selectors:
            raise ValueError("ipBlock cannot be combined with podSelector/namespaceSelector")
        if self.ip_block is None and not selectors:
            raise ValueError("give podSelector, namespaceSelector or ipBlock")
        return self


class NetworkPolicySpec(_Model):
    """The NetworkPolicy <name> over the members: ingress only from the listed clients, the
    members themselves (replication), the operator (probes) and metrics scrapers."""

    enabled: bool = Field(
        default=True,
        description="Create the NetworkPolicy (it is deleted when turned off). Members accept "
        "only what it admits wherever the cluster's network plugin enforces NetworkPolicy.",
    )
    clients: list[NetworkPolicyPeer] = Field(
        default_factory=lambda: [NetworkPolicyPeer(pod_selector=LabelSelector())],
        max_length=64,
        description="Who may connect to the geoserver port. Default: every pod in this "
        "namespace. Replaces the default when given; [] admits no clients besides members "
        "and the operator.",
    )
    metrics_from: list[NetworkPolicyPeer] = Field(
        default_factory=list,
        max_length=64,
        description="Who may scrape the metrics port (when metrics are enabled); [] = any "
        "source, to the metrics port only.",
    )


class FailoverSpec(_Model):
    """Switchover, automatic failover (promote the most advanced follower when the leader is
    lost) and how pod-template updates reach the leader; the local runtime (``geocluster
    up``) and the operator act on it alike (docs/operator.md#high-availability)."""

    enabled: bool = Field(
        default=True,
        description="Promote a follower when the leader is unreachable (or empty) for `delay` seconds.",
    )
    delay: int = Field(
        default=30,
        ge=1,
        le=86400,
        description="Seconds the leader must stay unreachable (or empty while followers hold data) "
        "before a failover.",
    )
    max_failovers_per_hour: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Automatic failovers allowed per hour; past it the cluster is Degraded "
        "(FailoverBudgetExhausted) and waits for a person. Switchovers are not counted.",
    )
    primary_update_method: Literal["switchover", "restart"] = Field(
        default="switchover",
        description="Kubernetes: how a pod-template change reaches the leader once every "
        "follower runs it: switchover to an updated follower (writes pause for the catch-up "
        "only), or restart the leader in place (writes stop until it is back).",
    )
    primary_update_strategy: Literal["unsupervised", "supervised"] = Field(
        default="unsupervised",
        description="Kubernetes: unsupervised = the operator updates the leader by itself; "
        "supervised = it updates the followers and waits for a person to switch over "
        "(annotation geo.geocluster.io/promote).",
    )


RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/", f"{GROUP}/")


class ServiceSpec(_Model):
    """The client Services `<name>` (read-write) and `<name>-readonly` (not the headless one)."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type of the client Services."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations on the client Services (e.g. a cloud load "
        "balancer's settings).",
    )
    load_balancer_source_ranges: list[str] = Field(
        default_factory=list, max_length=64,
        description="CIDRs allowed to reach a LoadBalancer Service (type LoadBalancer only).",
    )


TLS_SECRET_KEYS = ("tls.crt", "tls.key", "ca.crt")


class IssuerRef(_Model):
    """A cert-manager issuer (cert-manager.io/v1 ObjectReference) that signs the members'
    certificate."""

    name: str = Field(description="Name of the Issuer or ClusterIssuer.", min_length=1, max_length=253)
    kind: Literal["Issuer", "ClusterIssuer"] = Field(
        default="Issuer",
        description="Issuer (in the GeoCluster's namespace) or ClusterIssuer (cluster-wide).",
    )
    group: Literal["cert-manager.io"] = Field(
        default="cert-manager.io", description="API group of the issuer: cert-manager.io."
    )


class TLSSpec(_Model):
    """TLS on the geoserver port (RESP and HTTP) and for replication, and the operator's
    probes over TLS verifying ca.crt. Give exactly one of secretName and issuerRef."""

    secret_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="An existing Secret (type kubernetes.io/tls) in this namespace with tls.crt, "
        "tls.key and ca.crt; the certificate must name the members' pod DNS names "
        "(*.<name>-members.<namespace>.svc.<clusterDomain>), since followers and the "
        "operator verify them by those names. Renewals written into it are picked up "
        "without restarts.",
    )
    issuer_ref: IssuerRef | None = Field(
        default=None,
        description="A cert-manager Issuer or ClusterIssuer: the operator creates the "
        "Certificate <name>-tls (cert-manager.io/v1, owned by this GeoCluster) for the pod "
        "and Service DNS names and localhost, into the Secret <name>-tls. The issuer must "
        "fill ca.crt (CA, SelfSigned or Vault issuers do; ACME does not). Needs cert-manager.",
    )
    client_auth: Literal["none", "optional", "required"] = Field(
        default="none",
        description="Client certificates (geoserver's tls-auth-clients): none = not asked for; "
        "optional = verified against ca.crt when sent; required = every client must present "
        "one signed by ca.crt (the members and the operator use the Secret's own "
        "certificate).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TLSSpec:
        if (self.secret_name is None) == (self.issuer_ref is None):
            raise ValueError("give exactly one of secretName and issuerRef")
        return self


# --- backups and bootstrap (issue 14; CloudNativePG's barmanObjectStore / bootstrap.recovery) ---

DESTINATION_PATTERN = r"^(file:///\S*|s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/\S*)?)$"


class S3CredentialsSpec(_Model):
    """Keys of a Secret (in the GeoCluster's namespace) holding S3 credentials. Without it the
    operator uses boto3's default chain (IRSA web identity, instance profile, environment)."""

    secret_name: str = Field(description="Name of the Secret.", min_length=1, max_length=253)
    access_key_id_key: str = Field(
        default="ACCESS_KEY_ID", min_length=1, description="Key of the access key id."
    )
    secret_access_key_key: str = Field(
        default="ACCESS_SECRET_KEY", min_length=1, description="Key of the secret access key."
    )
    session_token_key: str | None = Field(default=None, description="Key of a session token, if any.")


class ObjectStoreSpec(_Model):
    """Where backups are kept: a destination URL and how to reach it."""

    destination: str = Field(
        pattern=DESTINATION_PATTERN,
        description="s3://bucket/prefix (S3-compatible object storage) or file:///path (a "
        "directory: a volume mounted into the operator, or the local runtime's disk). Backups "
        "go under <destination>/<cluster name>/<backup name>/.",
    )
    endpoint_url: str | None = Field(
        default=None,
        alias="endpointURL",
        pattern=r"^https?://\S+$",
        description="S3 endpoint (MinIO, Ceph RGW, ...); path-style addressing is used when set. "
        "Unset: AWS S3.",
    )
    region: str | None = Field(default=None, description="S3 region (unset: boto3's default).")
    s3_credentials: S3CredentialsSpec | None = Field(
        default=None, description="Secret with the S3 credentials; unset: boto3's default chain."
    )


class BackupRetention(_Model):
    """Which complete backups are kept; the newest complete one is never deleted."""

    count: int | None = Field(default=7, ge=1, le=100000, description="Keep at most this many (null: any).")
    max_age: str | None = Field(
        default=None,
        pattern=r"^[1-9][0-9]*[hdw]$",
        description='Delete backups older than this ("36h", "30d", "8w"); null: no age limit.',
    )


class BackupSpec(ObjectStoreSpec):
    """Scheduled and on-demand backups: a consistent AOF prefix, from a caught-up follower when
    one exists, streamed to the destination with a manifest, verified by size and AOFMD5."""

    schedule: str | None = Field(
        default=None,
        pattern=CRON_PATTERN,
        description='5-field cron schedule of backups; "" or null: on demand only (annotation '
        "geo.geocluster.io/backup-now, `geocluster backup`).",
    )
    time_zone: str = Field(default="UTC", description="IANA time zone the schedule is read in.")
    compression: Literal["none", "gzip", "zstd"] = Field(
        default="gzip", description="Compression of the stored AOF (zstd needs the zstandard package)."
    )
    target: Literal["prefer-follower", "leader"] = Field(
        default="prefer-follower",
        description="prefer-follower: a reachable, caught-up follower (the leader if none); "
        "leader: always the leader.",
    )
    retention: BackupRetention = Field(default_factory=BackupRetention, description="Retention.")
    max_retries: int = Field(
        default=3, ge=0, le=20, description="Retries of a failed backup (backoff 1, 2, 4 ... min)."
    )
    timeout_seconds: int = Field(
        default=3600, ge=10, le=86400, description="A backup still running after this counts as failed."
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _check_cron(value)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return AofShrinkSpec._zone(value)


AOF_SOURCE_PATTERN = r"^(/\S+|file:///\S+|s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/\S+)$"


def _s3_fields_need_s3(store: ObjectStoreSpec, field: str) -> None:
    """endpointURL, region and s3Credentials say how to reach S3: refused beside a file source."""
    given = [name for name, value in (("endpointURL", store.endpoint_url), ("region", store.region),
                                      ("s3Credentials", store.s3_credentials)) if value is not None]
    if given and not store.destination.startswith("s3://"):
        raise ValueError(f"{', '.join(given)}: only for an s3:// {field}")


class BootstrapFromBackup(ObjectStoreSpec):
    """Restore a backup (destination and credentials as in spec.backup)."""

    destination: str = Field(
        alias="source", pattern=DESTINATION_PATTERN, description="Destination URL the backup is in."
    )
    name: str = Field(default="latest", min_length=1, description="Backup name, or latest.")
    cluster: str | None = Field(
        default=None, description="Cluster name the backups are kept under (default: this one's)."
    )

    @model_validator(mode="after")
    def _s3_only(self) -> BootstrapFromBackup:
        _s3_fields_need_s3(self, "source")
        return self


class BootstrapFromAOF(ObjectStoreSpec):
    """An existing Tile38 or geoserver AOF to start from (no manifest: geoserver's loader checks
    it when the leader starts). S3 fields as in spec.backup."""

    destination: str = Field(
        alias="source",
        pattern=AOF_SOURCE_PATTERN,
        description="The AOF: s3://bucket/key, or a path / file:///path (on Kubernetes under "
        "/data, the only volume the init container mounts).",
    )

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"fromAOF is an object: {{source: {value}}} (with endpointURL, region and "
                             "s3Credentials for s3://)")
        return value

    @model_validator(mode="after")
    def _s3_only(self) -> BootstrapFromAOF:
        _s3_fields_need_s3(self, "source")
        return self


class BootstrapLeaderTLS(_Model):
    """The shape TLS to an old leader will take (not supported yet: refused when given)."""

    ca_secret_ref: SecretKeyRef | None = Field(default=None, description="Secret key with the CA "
                                               "that signed the old leader's certificate.")
    ca_file: str | None = Field(default=None, description="Local runtime: a CA file.")
    client_cert_secret_name: str | None = Field(default=None, description="A kubernetes.io/tls "
                                                "Secret with the client certificate to present.")


class BootstrapFromLeader(_Model):
    """A running Tile38 or geoserver leader to migrate from live: the new leader follows it
    until detached (annotation geo.geocluster.io/detach, `geocluster detach`)."""

    address: str = Field(pattern=r"^[^\s:]+:[0-9]{1,5}$", description="host:port of the old leader.")
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key with the old leader's password (sent as leaderauth; on Kubernetes "
        "the cluster itself needs a password too: geoserver sends leaderauth only when an "
        "authenticated client named the leader).",
    )
    catch_up_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Detach: how long the new leader may take to reach the old one's aof_size "
        "after the old one was made read-only; past it the old leader takes writes again "
        "(READONLY no) and the migration goes on.",
    )
    tls: BootstrapLeaderTLS | None = Field(
        default=None,
        description="Not supported yet: TLS to the old leader. A spec that sets it is refused "
        "(migrate from a plaintext port of the old leader: geoserver's --tls-port keeps --port "
        "plaintext; Tile38 has no TLS).",
    )

    @field_validator("tls")
    @classmethod
    def _no_tls(cls, value: BootstrapLeaderTLS | None) -> BootstrapLeaderTLS | None:
        if value is not None:
            raise ValueError("TLS to the old leader is not supported yet: give the address of a "
                             "plaintext port (geoserver: --tls-port keeps --port plaintext; Tile38 "
                             "has no TLS); see docs/backup.md#not-done-yet")
        return value

    @field_validator("address")
    @classmethod
    def _port(cls, value: str) -> str:
        port = int(value.rpartition(":")[2])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not in 1-65535")
        return value


class BootstrapSpec(_Model):
    """How a new cluster's leader gets its data (only when its data dir is empty). Give one."""

    from_backup: BootstrapFromBackup | None = Field(default=None, description="Restore a backup.")
    from_aof: BootstrapFromAOF | None = Field(
        default=None,
        alias="fromAOF",
        description="Copy an existing Tile38/geoserver AOF (a path, file:///path or s3://bucket/key).",
    )
    from_leader: BootstrapFromLeader | None = Field(default=None, description="Live migration.")

    @model_validator(mode="after")
    def _one(self) -> BootstrapSpec:
        given = [n for n in ("from_backup", "from_aof", "from_leader") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of fromBackup, fromAOF, fromLeader")
        return self

    @property
    def store(self) -> ObjectStoreSpec | None:
        """fromBackup or fromAOF: where the data is read from, and how."""
        return self.from_backup or self.from_aof


class GeoClusterSpec(_Model):
    """Desired state: one leader and N followers of geoserver, and how to keep them healthy."""

    image: str = Field(default=DEFAULT_IMAGE, min_length=1, description="geoserver image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy of the members."
    )
    followers: int = Field(default=2, ge=0, le=64, description="Number of followers.")
    resources: dict[str, Any] = Field(
        default_factory=dict, description="Container resources (core/v1 ResourceRequirements)."
    )
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Volumes.")
    server: ServerSpec = Field(default_factory=ServerSpec, description="geoserver settings.")
    aof_shrink: AofShrinkSpec = Field(default_factory=AofShrinkSpec, description="AOF shrinks.")
    follower_resync: FollowerResyncSpec = Field(
        default_factory=FollowerResyncSpec, description="Follower resyncs."
    )
    divergence: DivergenceSpec = Field(
        default_factory=DivergenceSpec, description="Divergence detection and repair."
    )
    failover: FailoverSpec = Field(
        default_factory=FailoverSpec, description="Switchover and automatic failover of the leader."
    )
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Placement of members.")
    security_context: SecurityContextSpec = Field(
        default_factory=SecurityContextSpec, description="securityContext overrides."
    )
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Metrics endpoint.")
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, description="NetworkPolicy admitting connections to members."
    )
    tls: TLSSpec | None = Field(
        default=None,
        description="TLS for clients, replication and the operator's probes (from a Secret or a "
        "cert-manager issuer); unset = plaintext.",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, max_length=16, description="Names of Secrets to pull the image with."
    )
    priority_class_name: str | None = Field(
        default=None, min_length=1, max_length=253, description="PriorityClass of the member pods."
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on the member pods (not app.kubernetes.io/* "
        "or geo.geocluster.io/*: the operator's).",
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations on the member pods."
    )
    service_account_name: str | None = Field(
        default=None, min_length=1, max_length=253,
        description="ServiceAccount of the member pods (its token is still not mounted: "
        "geoserver never calls the Kubernetes API).",
    )
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="The client Services.")
    cluster_domain: str = Field(default="cluster.local", description="DNS domain of the Kubernetes cluster.")
    paused: bool = Field(
        default=False,
        description="Stop all actions (shrinks, resyncs, repairs); status stays fresh.",
    )

    @model_validator(mode="after")
    def _own_labels(self) -> GeoClusterSpec:
        taken = [k for k in self.pod_labels if k.startswith(RESERVED_LABEL_PREFIXES)]
        if taken:
            raise ValueError(f"podLabels: {', '.join(taken)} are the operator's")
        if self.service.load_balancer_source_ranges and self.service.type != "LoadBalancer":
            raise ValueError("service.loadBalancerSourceRanges needs service.type LoadBalancer")
        if self.pod_annotations.get(f"{GROUP}/template-hash"):
            raise ValueError(f"podAnnotations: {GROUP}/template-hash is the operator's")
        return self
    backup: BackupSpec | None = Field(
        default=None, description="Scheduled and on-demand backups to object storage or a directory."
    )
    bootstrap: BootstrapSpec | None = Field(
        default=None, description="Where a new cluster's data comes from (backup, AOF, live leader)."
    )


# --- status ---------------------------------------------------------------------------------


class Condition(_Model):
    """metav1.Condition."""

    type: str = Field(description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field(default="", description="Human readable details.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="Generation judged.")


class RepairRecord(_Model):
    """One repair of a member."""

    time: str = Field(description="When it started (RFC 3339).")
    action: Literal["resync", "restart", "giveUp"] = Field(description="What was done.")
    result: str = Field(default="", description="started, ok, or error: ...")


class MemberStatus(_Model):
    """What the operator last saw of one member."""

    name: str = Field(description="Member (pod) name.")
    role: Literal["leader", "follower"] = Field(description="Role in the cluster.")
    pod: str = Field(default="", description="Pod name.")
    address: str | None = Field(default=None, description="host:port probed.")
    reachable: bool = Field(default=False, description="Whether SERVER answered.")
    aof_size: int | None = Field(default=None, description="aof_size reported by SERVER.")
    caught_up: bool | None = Field(default=None, description="Follower: applied all of leader.")
    diverged_since: str | None = Field(default=None, description="First seen diverging.")
    healthy_since: str | None = Field(
        default=None, description="Follower: healthy (no finding) continuously since."
    )
    divergence: str | None = Field(default=None, description="Current finding, if any.")
    last_repair: RepairRecord | None = Field(default=None, description="Latest repair.")
    repairs: int = Field(default=0, ge=0, description="Ladder step: repairs this episode.")
    gave_up: bool = Field(default=False, description="Ladder exhausted; needs a person.")


class ShrinkRecord(_Model):
    """The latest AOF shrink."""

    time: str = Field(description="When it started (RFC 3339).")
    result: str = Field(default="", description="started, ok, or error: ...")
    size_before: int | None = Field(default=None, description="Leader aof_size before.")
    size_after: int | None = Field(default=None, description="Leader aof_size after.")
    reason: str = Field(default="", description="schedule, size, or manual.")
    server_time_before: float | None = Field(
        default=None, description="Leader's last_shrink_time before this shrink (unix seconds)."
    )


class ResyncRecord(_Model):
    """The latest follower resync."""

    time: str = Field(description="When it started (RFC 3339).")
    member: str = Field(description="Follower resynced.")
    result: str = Field(default="", description="started, ok, or error: ...")
    resyncs_before: int | None = Field(default=None, description="SERVER resyncs at start.")
    reason: str = Field(default="", description="afterShrink, schedule, manual or repair.")


class FailoverRecord(_Model):
    """The latest switchover or failover."""

    time: str = Field(description="When it started (RFC 3339).")
    kind: Literal["switchover", "failover"] = Field(description="switchover (asked for) or failover.")
    old: str = Field(description="Member that led before.")
    new: str = Field(description="Member promoted.")
    reason: str = Field(default="", description="Why (the request, or what happened to the leader).")
    behind_bytes: int | None = Field(
        default=None,
        description="AOF bytes the new leader lacked of the old one: the bound on acknowledged "
        "writes lost (0 for a switchover).",
    )
    result: str = Field(default="", description="started, ok, or error: ...")
    write_pause_ms: int | None = Field(
        default=None, description="How long writes were refused (switchover: READONLY to promotion)."
    )


class LeaderWatch(_Model):
    """What the failover policy remembers of the leader between ticks."""

    last_seen: str | None = Field(default=None, description="Last time the leader answered (RFC 3339).")
    aof_size: int | None = Field(default=None, description="Leader aof_size when last seen.")
    caught_up: list[str] = Field(
        default_factory=list, description="Followers caught up with the leader when it was last seen."
    )
    failing_since: str | None = Field(
        default=None, description="Since when the leader is unreachable or empty (RFC 3339)."
    )
    failing: str | None = Field(default=None, description="What is wrong with the leader.")



class BackupRecord(_Model):
    """The latest backup."""

    time: str = Field(description="When it started (RFC 3339).")
    name: str = Field(default="", description="Backup name (its folder in the destination).")
    result: str = Field(default="", description="started, ok, or error: ...")
    reason: str = Field(default="", description="schedule, manual or retry.")
    attempt: int = Field(default=1, ge=1, description="Attempt of this backup (retries count up).")
    source: str | None = Field(default=None, description="Member the AOF prefix was read from.")
    location: str | None = Field(default=None, description="URL of the backup.")
    size: int | None = Field(default=None, description="Stored bytes (compressed).")
    aof_size: int | None = Field(default=None, description="AOF bytes backed up.")
    duration_seconds: float | None = Field(default=None, description="How long it took.")


BOOTSTRAP_PHASES = ("pending", "restoring", "restored", "following", "caught-up", "detaching",
                    "detached", "skipped", "failed")


class BootstrapRecord(_Model):
    """How this cluster's data was bootstrapped, and how far it got."""

    kind: Literal["fromBackup", "fromAOF", "fromLeader"] = Field(description="Bootstrap method.")
    source: str = Field(description="Backup location, AOF URL or old leader address.")
    phase: Literal[BOOTSTRAP_PHASES] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="pending (no member started yet), restoring (the init container runs), "
        "restored, following (fromLeader: copying the old leader), caught-up (has every byte "
        "the old leader has: ready to detach), detaching, detached, skipped (the members had "
        "data already), failed (see message; a refused backup is never served).",
    )
    result: str = Field(default="", description="following (fromLeader until detached), ok, or error: ...")
    time: str = Field(description="When the bootstrap began (RFC 3339).")
    aof_size: int | None = Field(default=None, description="AOF bytes the leader has (restored or copied).")
    source_aof_size: int | None = Field(
        default=None, description="fromLeader: the old leader's aof_size at the last look."
    )
    caught_up: str | None = Field(
        default=None, description="fromLeader: when the new leader first had every byte (RFC 3339)."
    )
    detached: str | None = Field(default=None, description="fromLeader: when the leader detached (RFC 3339).")
    finished: str | None = Field(default=None, description="When it was restored or detached (RFC 3339).")
    write_pause_ms: int | None = Field(
        default=None,
        description="fromLeader: milliseconds between READONLY on the old leader and the new one "
        "taking writes (clients saw `read only` errors meanwhile).",
    )
    member: str | None = Field(default=None, description="Member the phase was read from (its pod).")
    message: str = Field(
        default="", description="Details, e.g. why a restore was refused or a detach failed."
    )


class GeoClusterStatus(_Model):
    """Observed state, written only by the operator."""

    observed_generation: int | None = Field(default=None, description="Generation reconciled.")
    phase: str = Field(
        default="", description="Pending, Running, Progressing, Degraded, Paused, Invalid."
    )
    leader: str | None = Field(default=None, description="Leader member name.")
    ready_followers: int = Field(default=0, ge=0, description="Reachable, caught-up followers.")
    selector: str | None = Field(
        default=None, description="Label selector of the follower pods (scale subresource, autoscalers)."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Conditions.")
    members: list[MemberStatus] = Field(default_factory=list, description="Members.")
    last_shrink: ShrinkRecord | None = Field(default=None, description="Latest shrink.")
    last_resync: ResyncRecord | None = Field(default=None, description="Latest resync.")
    pending_resyncs: list[str] = Field(
        default_factory=list, description="Followers still to resync in the current round."
    )
    last_resync_round: str | None = Field(
        default=None, description="When the last scheduled resync round began."
    )
    repair_history: list[str] = Field(
        default_factory=list, description="Repair start times in the last hour (rate budget)."
    )
    leader_aof_size: int | None = Field(default=None, description="Leader aof_size (for AOF).")
    hooks: int | None = Field(
        default=None, ge=0, description="Hooks and channels defined on the leader (SERVER num_hooks)."
    )
    pending_events: int | None = Field(
        default=None, ge=0, description="Hook events queued on the leader, not yet delivered."
    )
    last_failover: FailoverRecord | None = Field(default=None, description="Latest switchover or failover.")
    failover_history: list[str] = Field(
        default_factory=list, description="Automatic failover times in the last hour (rate budget)."
    )
    leader_watch: LeaderWatch | None = Field(default=None, description="Failover policy memory.")
    last_backup: BackupRecord | None = Field(default=None, description="Latest backup attempt.")
    last_successful_backup: str | None = Field(
        default=None, description="When the latest good backup was taken."
    )
    backups: int | None = Field(default=None, ge=0, description="Complete backups in the destination.")
    backup_failures: int = Field(default=0, ge=0, description="Consecutive failed backups.")
    bootstrap: BootstrapRecord | None = Field(default=None, description="How the data was bootstrapped.")


# The longest child name is `<name>-follower` / `<name>-readonly` (+9); a StatefulSet's pods
# carry `controller-revision-hash: <sts name>-<10-char hash>`, a label value of at most 63.
MAX_NAME_LENGTH = 63 - 11 - len("-follower")


def check_name(name: str) -> None:
    """Raise :class:`SpecError` for a GeoCluster name whose children Kubernetes would refuse."""
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(
            f"metadata.name: at most {MAX_NAME_LENGTH} characters (is {len(name)}): the "
            "followers' StatefulSet revision label would exceed 63"
        )


def parse_spec(raw: dict[str, Any] | None) -> GeoClusterSpec:
    """Validate a spec dict; raise :class:`SpecError` naming every bad field."""
    try:
        return GeoClusterSpec.model_validate(raw or {})
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


def format_errors(exc: ValidationError) -> str:
    """One line per error: ``spec.aofShrink.schedule: <message>``."""
    lines = []
    for err in exc.errors():
        path = "spec" + "".join(_segment(part) for part in err["loc"])
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{path}: {msg}")
    return "; ".join(lines)


def _segment(part: str | int) -> str:
    return f"[{part}]" if isinstance(part, int) else f".{part}"


def dump(model: BaseModel) -> dict[str, Any]:
    """Serialize a model the way it appears in Kubernetes (camelCase, no nulls)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def rfc3339(moment: datetime) -> str:
    """Kubernetes timestamp format (UTC, seconds)."""
    return moment.astimezone(zoneinfo.ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """Inverse of :func:`rfc3339`; None stays None."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
