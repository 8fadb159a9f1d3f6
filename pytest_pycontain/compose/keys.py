"""Which Compose keys exist (the compose specification's, as facts) and which of them we do.

A key that exists but that we do not do is ``NotSupported`` naming file, line, service and key,
never silently dropped; a key that does not exist at all is a ConfigError as in compose.
"""

from __future__ import annotations

TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "secrets", "configs",
             "include", "models"}
TOP_LEVEL_SUPPORTED = {"version", "name", "services", "networks", "volumes"}

SERVICE = {
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup",
    "cgroup_parent", "command", "configs", "container_name", "cpu_count", "cpu_percent",
    "cpu_period", "cpu_quota",
    "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec",
    "depends_on", "deploy", "develop", "device_cgroup_rules", "devices", "dns", "dns_opt",
    "dns_search", "domainname", "driver_opts", "entrypoint", "env_file", "environment",
    "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add", "healthcheck",
    "hostname", "image", "init", "ipc", "isolation", "labels", "label_file", "links",
    "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "models", "network_mode", "networks", "oom_kill_disable",
    "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop",
    "privileged", "profiles", "provider", "pull_policy", "read_only", "restart", "runtime",
    "scale", "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period",
    "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "use_api_socket",
    "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
}
SERVICE_SUPPORTED = {
    "build", "cap_add", "cap_drop", "command", "cpus", "depends_on", "deploy", "entrypoint",
    "env_file", "environment", "expose", "extra_hosts", "healthcheck", "hostname", "image",
    "init", "labels", "mem_limit", "networks", "pids_limit", "ports", "privileged", "profiles",
    "read_only", "scale", "security_opt", "shm_size", "stop_grace_period", "stop_signal",
    "sysctls", "tmpfs", "user", "volumes", "working_dir",
}

BUILD = {"context", "dockerfile", "dockerfile_inline", "args", "ssh", "cache_from", "cache_to",
         "additional_contexts", "extra_hosts", "isolation", "labels", "network", "no_cache",
         "pull", "shm_size", "target", "secrets", "tags", "platforms", "privileged", "ulimits",
         "entitlements", "provenance", "sbom"}
BUILD_SUPPORTED = {"context", "dockerfile", "args", "target"}

HEALTHCHECK = {"test", "interval", "timeout", "retries", "start_period", "start_interval",
               "disable"}
DEPENDS_ON = {"condition", "restart", "required"}
SERVICE_NETWORK = {"aliases", "ipv4_address", "ipv6_address", "link_local_ips", "mac_address",
                   "driver_opts", "priority", "gw_priority", "interface_name"}
SERVICE_NETWORK_SUPPORTED = {"aliases"}
DEPLOY = {"mode", "replicas", "labels", "update_config", "rollback_config", "restart_policy",
          "placement", "resources", "endpoint_mode"}
DEPLOY_SUPPORTED = {"replicas", "resources"}
RESOURCES = {"limits", "reservations"}
LIMITS = {"cpus", "memory", "pids"}
PORT = {"target", "published", "host_ip", "protocol", "mode", "app_protocol", "name"}
VOLUME = {"type", "source", "target", "read_only", "bind", "volume", "tmpfs", "image",
          "consistency"}
VOLUME_VOLUME = {"nocopy", "subpath", "labels"}
VOLUME_VOLUME_SUPPORTED = {"nocopy", "subpath"}
VOLUME_BIND = {"propagation", "create_host_path", "selinux", "recursive"}
VOLUME_BIND_SUPPORTED = {"create_host_path"}
NETWORK = {"driver", "driver_opts", "attachable", "enable_ipv6", "ipam", "internal", "labels",
           "external", "name", "enable_ipv4"}
NETWORK_SUPPORTED = {"driver", "name", "internal"}
TOP_VOLUME = {"driver", "driver_opts", "external", "labels", "name"}
TOP_VOLUME_SUPPORTED = {"driver", "name", "external"}
