/* What a process in a container may do, one verdict per line: "probe verdict".
 *
 * Built static at test time and bound into a busybox container of each backend, so that the
 * native engine and Docker answer the very same questions. Every probe that could change
 * something undoes it at once (a sysctl is written back with the value just read, a mount is
 * unmounted); nothing here writes outside the container. Verdicts: "ok", an errno name, or a
 * value. Arguments name probes to leave out where they would succeed and touch the host
 * ("cgroup": a v1 hierarchy is the host's; "keys": a session keyring may be), and "ro=PATH"
 * adds a read-only mount to try to remount.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static int argc_;
static char **argv_;

static int skipped(const char *name) {
    for (int i = 1; i < argc_; i++)
        if (strcmp(argv_[i], name) == 0) return 1;
    return 0;
}

static const char *err(int e) {
    switch (e) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case EROFS: return "EROFS";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case ENXIO: return "ENXIO";
    case ENODEV: return "ENODEV";
    case EBUSY: return "EBUSY";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ESTALE: return "ESTALE";
    case EBADF: return "EBADF";
    default: { static char b[32]; snprintf(b, sizeof b, "errno%d", e); return b; }
    }
}

static void status_lines(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        char key[64], value[128];
        if (sscanf(line, "%63[^:]:%127s", key, value) != 2) continue;
        if (!strncmp(key, "Cap", 3) || !strcmp(key, "Seccomp") || !strcmp(key, "NoNewPrivs"))
            printf("status.%s %s\n", key, value);
    }
    if (f) fclose(f);
}

/* A masked path: "hidden" (nothing to read), "readable", or why it cannot be opened. */
static void masked(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) { printf("masked:%s %s\n", path, err(errno)); return; }
    if (S_ISDIR(st.st_mode)) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "ls -A %s 2>/dev/null | head -c1 | wc -c", path);
        FILE *p = popen(cmd, "r");
        int n = 0;
        if (p) { if (fscanf(p, "%d", &n) != 1) n = 0; pclose(p); }
        printf("masked:%s %s\n", path, n ? "readable" : "hidden");
        return;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("masked:%s %s\n", path, err(errno)); return; }
    char c;
    ssize_t n = read(fd, &c, 1);
    printf("masked:%s %s\n", path, n > 0 ? "readable" : n == 0 ? "hidden" : err(errno));
    close(fd);
}

static void read_only(const char *path) {
    struct statvfs sv;
    if (statvfs(path, &sv) != 0) { printf("readonly:%s %s\n", path, err(errno)); return; }
    printf("readonly:%s %s\n", path, (sv.f_flag & ST_RDONLY) ? "ro" : "rw");
}

/* Write back the value just read: the verdict is whether the write is allowed at all. */
static void sysctl_write_back(const char *path) {
    char value[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("sysctl:%s %s\n", path, err(errno)); return; }
    ssize_t n = read(fd, value, sizeof value);
    close(fd);
    if (n <= 0) { printf("sysctl:%s unreadable\n", path); return; }
    fd = open(path, O_WRONLY);
    if (fd < 0) { printf("sysctl:%s %s\n", path, err(errno)); return; }
    ssize_t w = write(fd, value, n);
    printf("sysctl:%s %s\n", path, w == n ? "ok" : err(errno));
    close(fd);
}

static void device(const char *name, mode_t kind, int major_, int minor_) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/probe-%s", name);
    unlink(path);
    if (mknod(path, kind | 0600, makedev(major_, minor_)) != 0) {
        printf("mknod:%s %s\n", name, err(errno));
        return;
    }
    printf("mknod:%s ok\n", name);
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    printf("open:%s %s\n", name, fd >= 0 ? "ok" : err(errno));
    if (fd >= 0) close(fd);
    unlink(path);
}

static void try_mount(const char *name, const char *source, const char *type,
                      const char *data) {
    mkdir("/tmp/probe-mnt", 0700);
    int r = mount(source, "/tmp/probe-mnt", type, 0, data);
    printf("mount:%s %s\n", name, r == 0 ? "ok" : err(errno));
    if (r == 0) {
        if (!strcmp(name, "cgroup1")) {
            int fd = open("/tmp/probe-mnt/release_agent", O_WRONLY);
            printf("cgroup1:release_agent %s\n", fd >= 0 ? "writable" : err(errno));
            if (fd >= 0) close(fd);
        }
        if (!strcmp(name, "binfmt_misc")) {
            printf("binfmt_misc:register %s\n",
                   access("/tmp/probe-mnt/register", W_OK) == 0 ? "writable" : err(errno));
        }
        umount2("/tmp/probe-mnt", MNT_DETACH);
    }
    rmdir("/tmp/probe-mnt");
}

/* unshare in a child, so that the probe itself stays where it is */
static void try_unshare(const char *name, int flag) {
    pid_t pid = fork();
    if (pid == 0) _exit(unshare(flag) == 0 ? 0 : errno);
    int status = 0;
    waitpid(pid, &status, 0);
    printf("unshare:%s %s\n", name, err(WIFEXITED(status) ? WEXITSTATUS(status) : 255));
}

static void try_remount(const char *path) {
    struct statvfs sv;
    if (statvfs(path, &sv) != 0) { printf("remount:%s %s\n", path, err(errno)); return; }
    int r = mount(NULL, path, NULL, MS_REMOUNT | MS_BIND, NULL);  /* read-write again */
    printf("remount:%s %s\n", path, r == 0 ? "ok" : err(errno));
    char file[256];
    snprintf(file, sizeof file, "%s/.probe-write", strcmp(path, "/") ? path : "");
    int fd = open(file, O_WRONLY | O_CREAT, 0600);
    printf("write:%s %s\n", path, fd >= 0 ? "ok" : err(errno));
    if (fd >= 0) { close(fd); unlink(file); }
    if (r == 0 && (sv.f_flag & ST_RDONLY))  /* put it back */
        mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL);
}

/* the "shocker": a handle of the filesystem's root, opened through a bind-mounted file */
static void shocker(const char *bound) {
    int mount_fd = open(bound, O_RDONLY);
    if (mount_fd < 0) { printf("open_by_handle_at %s\n", err(errno)); return; }
    struct { struct file_handle h; unsigned char bytes[128]; } handle;
    int mount_id;
    handle.h.handle_bytes = sizeof handle.bytes;
    if (syscall(SYS_name_to_handle_at, AT_FDCWD, bound, &handle.h, &mount_id, 0) != 0) {
        printf("name_to_handle_at %s\n", err(errno));
        /* the classic forged handle instead: inode 2 (a root directory), generation 0 */
        memset(&handle, 0, sizeof handle);
        handle.h.handle_bytes = 8;
        handle.h.handle_type = 1;  /* FILEID_INO32_GEN */
        handle.bytes[0] = 2;
    } else {
        printf("name_to_handle_at ok\n");
    }
    int fd = syscall(SYS_open_by_handle_at, mount_fd, &handle.h, O_RDONLY);
    printf("open_by_handle_at %s\n", fd >= 0 ? "ok" : err(errno));
    if (fd >= 0) close(fd);
    close(mount_fd);
}

static void raw(const char *name, long number, long a, long b, long c, long d, long e) {
    long r = syscall(number, a, b, c, d, e);
    printf("syscall:%s %s\n", name, r >= 0 ? "ok" : err(errno));
    if (r > 2 && (!strcmp(name, "io_uring_setup") || !strcmp(name, "bpf"))) close((int)r);
}

int main(int argc, char **argv) {
    argc_ = argc;
    argv_ = argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    status_lines();
    static const char *masked_paths[] = {
        "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
        "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
        "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware", NULL};
    for (int i = 0; masked_paths[i]; i++) masked(masked_paths[i]);
    static const char *ro_paths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                     "/proc/sysrq-trigger", "/sys", NULL};
    for (int i = 0; ro_paths[i]; i++) read_only(ro_paths[i]);
    sysctl_write_back("/proc/sys/kernel/core_pattern");
    sysctl_write_back("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    device("loop0", S_IFBLK, 7, 0);
    device("kmsg", S_IFCHR, 1, 11);
    try_mount("tmpfs", "tmpfs", "tmpfs", NULL);
    try_mount("proc", "proc", "proc", NULL);
    try_mount("sysfs", "sysfs", "sysfs", NULL);
    if (!skipped("cgroup")) try_mount("cgroup1", "cgroup", "cgroup", "none,name=pycontainprobe");
    try_mount("binfmt_misc", "binfmt_misc", "binfmt_misc", NULL);
    try_unshare("mnt", CLONE_NEWNS);
    try_unshare("uts", CLONE_NEWUTS);
    try_unshare("ipc", CLONE_NEWIPC);
    try_unshare("net", CLONE_NEWNET);
    try_unshare("pid", CLONE_NEWPID);
    try_unshare("cgroup", CLONE_NEWCGROUP);
    try_unshare("user", CLONE_NEWUSER);
    try_remount("/");
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "ro=", 3)) try_remount(argv[i] + 3);
    shocker("/etc/hosts");
    raw("clone3", SYS_clone3, 0, 0, 0, 0, 0);
    raw("keyctl", SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0, 0, 0);
    if (!skipped("keys"))  /* a key added to the session keyring stays there */
        raw("add_key", SYS_add_key, (long)"user", (long)"probe", (long)"x", 1, -3);
    raw("request_key", SYS_request_key, (long)"user", (long)"probe", 0, -3, 0);
    unsigned char params[120] = {0};
    raw("io_uring_setup", SYS_io_uring_setup, 1, (long)params, 0, 0, 0);
    raw("syslog", SYS_syslog, 10 /* SYSLOG_ACTION_SIZE_BUFFER */, 0, 0, 0, 0);
    char name[256] = {0};
    gethostname(name, sizeof name - 1);  /* written back as it is */
    raw("sethostname", SYS_sethostname, (long)name, (long)strlen(name), 0, 0, 0);
    raw("setns", SYS_setns, -1, 0, 0, 0, 0);
    raw("bpf", SYS_bpf, 0, 0, 0, 0, 0);
    return 0;
}
