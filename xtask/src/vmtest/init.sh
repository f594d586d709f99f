#!/bin/busybox sh
# PID 1 of a `cargo xtask vm-test` guest (in its initramfs, with busybox and the modules
# the root needs). Root: the host's / over 9p, read-only, under a tmpfs overlay, so the
# guest writes anywhere and the host is never changed; the guest kernel's own modules on
# /lib/modules/$(uname -r); the host's run directory read-write on /run/vm-test.
# switch_root (not chroot), so that the kernel's modprobe helper sees the new root too.
# Then runs /run/vm-test/cmd.sh and writes rc, stdout, stderr and dmesg.txt there.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /lower /upper /newroot
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "vm-test-init: $*" > /dev/ttyS0; }
die() { say "FATAL: $*"; poweroff -f; }
for m in $(cat /modules.list); do insmod "/mods/$m" || say "insmod $m failed"; done
O=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$O,ro,cache=loose" hostroot /lower || die "mount hostroot"
mount -t tmpfs -o mode=755 tmpfs /upper
mkdir -p /upper/u /upper/w
R=/newroot
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w $R || die "overlay"
KVER=$(uname -r)
if [ -L $R/lib ]; then MD=$R/usr/lib/modules/$KVER; else MD=$R/lib/modules/$KVER; fi
mkdir -p $MD && mount -t 9p -o "$O,ro,cache=loose" mods $MD || say "no modules share"
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t bpf bpf $R/sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mkdir -p $R/run/vm-test
mount -t 9p -o "$O" out $R/run/vm-test || die "mount out"
cp /bin/busybox $R/run/busybox
cat > $R/run/stage2 <<'EOS'
B=/run/busybox
OUT=/run/vm-test
$B hostname vm-test
$B ip link set lo up
T=$($B sed -n 's/.*vmtest.timeout=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "vm-test-init: booted $($B uname -r) in $($B cut -d' ' -f1 /proc/uptime)s" > /dev/ttyS0
cd /tmp
/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb \
  /usr/bin/timeout -k 5 "${T:-900}" /bin/bash $OUT/cmd.sh > $OUT/stdout 2> $OUT/stderr < /dev/null
echo $? > $OUT/rc
$B dmesg > $OUT/dmesg.txt
$B sync
echo "vm-test-init: done rc=$($B cat $OUT/rc)" > /dev/ttyS0
$B umount $OUT
$B poweroff -f
EOS
exec switch_root $R /run/busybox sh /run/stage2
