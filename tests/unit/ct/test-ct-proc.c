/* Unit tests for the /proc parsers (samples taken from this machine's kernel 6.18, and tricky
 * inputs) and their live readers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ct/memory-internal.h"
#include "checkpoint/ct/proc-internal.h"
#include "common/common.h"

static const char maps_sample[] =
	"55e5d1e4a000-55e5d1e6b000 rw-p 00000000 00:00 0                          [heap]\n"
	"7f4e4fe9e000-7f4e4fec4000 r--p 00000000 fe:00 332835                     "
	"/usr/lib/x86_64-linux-gnu/libc.so.6\n"
	"7f4e4fec4000-7f4e5001a000 r-xp 00026000 fe:00 332835                     "
	"/usr/lib/x86_64-linux-gnu/libc.so.6\n"
	"7f4e50071000-7f4e50073000 rw-p 001d3000 fe:00 332835                     "
	"/usr/lib/x86_64-linux-gnu/libc.so.6\n"
	"7f4e50073000-7f4e50080000 rw-p 00000000 00:00 0 \n"
	"7f4e5008d000-7f4e50091000 r--p 00000000 00:00 0                          [vvar]\n"
	"7f4e50091000-7f4e50093000 r--p 00000000 00:00 0                          [vvar_vclock]\n"
	"7f4e50093000-7f4e50095000 r-xp 00000000 00:00 0                          [vdso]\n"
	"7fffa9ad9000-7fffa9afa000 rw-p 00000000 00:00 0                          [stack]\n"
	"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";

static void test_maps_sample(void **state)
{
	struct ct_vma_list l = {};

	assert_int_equal(ct_proc_parse_maps(maps_sample, strlen(maps_sample), &l), 0);
	assert_int_equal(l.n, 10);
	assert_int_equal(l.vmas[0].start, 0x55e5d1e4a000ULL);
	assert_int_equal(l.vmas[0].end, 0x55e5d1e6b000ULL);
	assert_string_equal(l.vmas[0].path, "[heap]");
	assert_int_equal(ct_vma_classify(&l.vmas[0]), CT_VMA_ANON_PRIVATE);

	assert_string_equal(l.vmas[2].path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
	assert_true(l.vmas[2].read && !l.vmas[2].write && l.vmas[2].exec && !l.vmas[2].shared);
	assert_int_equal(l.vmas[2].offset, 0x26000);
	assert_int_equal(l.vmas[2].dev_major, 0xfe);
	assert_int_equal(l.vmas[2].dev_minor, 0);
	assert_int_equal(l.vmas[2].inode, 332835);
	assert_int_equal(ct_vma_classify(&l.vmas[3]), CT_VMA_FILE_PRIVATE);

	assert_null(l.vmas[4].path); /* anonymous, trailing blank */
	assert_int_equal(ct_vma_classify(&l.vmas[4]), CT_VMA_ANON_PRIVATE);
	assert_int_equal(ct_vma_classify(&l.vmas[5]), CT_VMA_VVAR);
	assert_int_equal(ct_vma_classify(&l.vmas[6]), CT_VMA_VVAR_VCLOCK);
	assert_int_equal(ct_vma_classify(&l.vmas[7]), CT_VMA_VDSO);
	assert_int_equal(l.vmas[7].end - l.vmas[7].start, 2 * 4096);
	assert_int_equal(ct_vma_classify(&l.vmas[8]), CT_VMA_ANON_PRIVATE);
	assert_int_equal(ct_vma_classify(&l.vmas[9]), CT_VMA_VSYSCALL);
	assert_false(l.vmas[9].read);
	assert_true(l.vmas[9].exec);
	assert_false(ct_vma_kind_has_contents(CT_VMA_VDSO));
	assert_true(ct_vma_kind_has_contents(CT_VMA_FILE_PRIVATE));
	assert_string_equal(ct_vma_kind_to_string(CT_VMA_VVAR_VCLOCK), "vvar_vclock");
	ct_vma_list_done(&l);
	ct_vma_list_done(&l); /* idempotent */
}

static void test_maps_tricky(void **state)
{
	static const char text[] =
		"1000-3000 rw-s 00000000 00:01 4242                       /dev/zero (deleted)\n"
		"3000-4000 rw-p 00001000 fe:00 17                          /tmp/a b  c.dat "
		"(deleted)\n"
		"4000-5000 rw-s 00000000 00:01 99                          /memfd:pool (deleted)\n"
		"5000-6000 r--s 00000000 fe:00 18                          /srv/data file\n"
		"6000-7000 rw-p 00000000 00:00 0                          [anon:glibc malloc]\n"
		"7000-8000 rw-s 00000000 00:01 5                          /SYSV0000002a\n"
		"8000-9000 rw-p 00000000 00:00 0                          [weird]\n"
		"9000-a000 rw-p 00000000 00:00 0                          (deleted)";
	struct ct_vma_list l = {};

	assert_int_equal(ct_proc_parse_maps(text, strlen(text), &l), 0);
	assert_int_equal(l.n, 8);
	assert_string_equal(l.vmas[0].path, "/dev/zero");
	assert_true(l.vmas[0].deleted && l.vmas[0].shared);
	assert_int_equal(l.vmas[0].inode, 4242);
	assert_int_equal(ct_vma_classify(&l.vmas[0]), CT_VMA_ANON_SHARED);
	assert_string_equal(l.vmas[1].path, "/tmp/a b  c.dat");
	assert_true(l.vmas[1].deleted);
	assert_int_equal(ct_vma_classify(&l.vmas[1]), CT_VMA_FILE_PRIVATE);
	assert_int_equal(ct_vma_classify(&l.vmas[2]), CT_VMA_ANON_SHARED);
	assert_string_equal(l.vmas[3].path, "/srv/data file");
	assert_false(l.vmas[3].deleted);
	assert_int_equal(ct_vma_classify(&l.vmas[3]), CT_VMA_FILE_SHARED);
	assert_int_equal(ct_vma_classify(&l.vmas[4]), CT_VMA_ANON_PRIVATE);
	assert_int_equal(ct_vma_classify(&l.vmas[5]), CT_VMA_ANON_SHARED);
	assert_int_equal(ct_vma_classify(&l.vmas[6]), CT_VMA_UNKNOWN_SPECIAL);
	/* A file literally named "(deleted)" is not stripped: no leading blank is left. */
	assert_string_equal(l.vmas[7].path, "(deleted)");
	ct_vma_list_done(&l);
}

static void test_maps_malformed(void **state)
{
	static const char *const bad[] = {
		"3000-1000 rw-p 00000000 00:00 0",	    /* start > end */
		"1000-1000 rw-p 00000000 00:00 0",	    /* empty */
		"1001-2000 rw-p 00000000 00:00 0",	    /* unaligned */
		"1000-2000 rwzp 00000000 00:00 0",	    /* perms */
		"1000-2000 rw-q 00000000 00:00 0",	    /* perms */
		"1000-2000 rw-p 00000000 00:00",	    /* no inode */
		"1000-2000 rw-p 00000000 0000 0",	    /* dev */
		"10000000000000000000-2000 rw-p 0 00:00 0", /* overflow */
		"1000-2000 rw-p 00000000 00:00 0x",	    /* junk after inode */
		"1000-2000 rw-p 00000000 00:00 0 a\n1000-3000 rw-p 00000000 00:00 0", /* overlap */
		"garbage",
	};
	struct ct_vma_list l = {};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(ct_proc_parse_maps(bad[i], strlen(bad[i]), &l), -EBADMSG);
		assert_null(l.vmas);
	}
	/* Lengths are honoured: the text is not NUL-terminated where len ends. */
	assert_int_equal(ct_proc_parse_maps("1000-2000 rw-p 00000000 00:00 0 /x", 31, &l), 0);
	assert_int_equal(l.n, 1);
	assert_null(l.vmas[0].path);
	ct_vma_list_done(&l);
	assert_int_equal(ct_proc_parse_maps("", 0, &l), 0);
	assert_int_equal(l.n, 0);
}

/* smaps: key lines are skipped, VmFlags lands on the VMA above it. */
static void test_smaps_vmflags(void **state)
{
	static const char smaps[] =
		"7f0000000000-7f0000400000 rw-p 00000000 00:00 0 \n"
		"Size:               4096 kB\nRss:                   0 kB\nTHPeligible:    1\n"
		"VmFlags: rd wr mr mw me nr dc wf dd hg mg lo lf sl \n"
		"7f0000400000-7f0000800000 rw-p 00000000 00:00 0 \n"
		"Size:               4096 kB\nProtectionKey:         0\n"
		"VmFlags: rd wr mr mw me ac nh gd dp um\n"
		"7ffff7fc0000-7ffff7fc4000 r--p 00000000 00:00 0                  [vvar]\n"
		"VmFlags: rd mr pf io de dd ss uw ui zz\n";
	static const char *const bad[] = {
		"VmFlags: rd wr\n",					       /* before any VMA */
		"1000-2000 rw-p 00000000 00:00 0\nVmFlags: rd\nVmFlags: rd\n", /* twice */
		"1000-2000 rw-p 00000000 00:00 0\nVmFlags: rd Wr\n",	       /* not a mnemonic */
		"1000-2000 rw-p 00000000 00:00 0\nVmFlags: rdx\n",
	};
	struct ct_vma_list l = {};
	uint32_t f;

	assert_int_equal(ct_proc_parse_maps(smaps, strlen(smaps), &l), 0);
	assert_int_equal(l.n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_true(l.vmas[i].have_vmflags);
	assert_int_equal(l.vmas[0].vmflags,
			 CT_VMF_NORESERVE | CT_VMF_DONTCOPY | CT_VMF_WIPEONFORK | CT_VMF_DONTDUMP |
				 CT_VMF_HUGEPAGE | CT_VMF_MERGEABLE | CT_VMF_LOCKED |
				 CT_VMF_LOCKONFAULT | CT_VMF_SEALED | CT_VMF_MAYWRITE);
	assert_int_equal(l.vmas[1].vmflags, CT_VMF_NOHUGEPAGE | CT_VMF_GROWSDOWN |
						    CT_VMF_DROPPABLE | CT_VMF_UFFD |
						    CT_VMF_MAYWRITE);
	assert_int_equal(l.vmas[2].vmflags, CT_VMF_DONTDUMP | CT_VMF_SHADOW_STACK | CT_VMF_UFFD);
	assert_string_equal(l.vmas[2].path, "[vvar]");
	ct_vma_list_done(&l);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(ct_proc_parse_maps(bad[i], strlen(bad[i]), &l), -EBADMSG);
		assert_null(l.vmas);
	}
	/* Plain maps text has no VmFlags. */
	assert_int_equal(ct_proc_parse_maps("1000-2000 rw-p 00000000 00:00 0", 31, &l), 0);
	assert_false(l.vmas[0].have_vmflags);
	ct_vma_list_done(&l);
	assert_int_equal(ct_proc_parse_vmflags("", 0, &f), 0);
	assert_int_equal(f, 0);
}

static const char status_sample[] = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\n"
				    "Tgid:\t25635\nNgid:\t0\nPid:\t25635\nPPid:\t25590\n"
				    "TracerPid:\t0\nUid:\t0\t1\t2\t3\nGid:\t4\t5\t6\t7\n"
				    "FDSize:\t256\nGroups:\t \nNStgid:\t25635\t1\n"
				    "NSpid:\t25635\t1\nNSpgid:\t25590\nNSsid:\t23605\n"
				    "Kthread:\t0\nVmPeak:\t    3060 kB\nThreads:\t3\n"
				    "SigQ:\t1/96365\nSigPnd:\t0000000000000100\n"
				    "ShdPnd:\t0000000000000200\nSigBlk:\tfffffffe7ffbfeff\n"
				    "SigIgn:\t0000000000001000\nSigCgt:\t0000000000000400\n"
				    "CapInh:\t0000000000000000\nCpus_allowed_list:\t0-1\n";

static void test_status(void **state)
{
	struct ct_proc_status s;
	char buf[sizeof(status_sample) + 64];

	assert_int_equal(ct_proc_parse_status(status_sample, strlen(status_sample), &s), 0);
	assert_int_equal(s.pid, 25635);
	assert_int_equal(s.tgid, 25635);
	assert_int_equal(s.ppid, 25590);
	assert_int_equal(s.n_nspid, 2);
	assert_int_equal(s.nspid[0], 25635);
	assert_int_equal(s.nspid[1], 1);
	assert_int_equal(s.uid[0], 0);
	assert_int_equal(s.uid[3], 3);
	assert_int_equal(s.gid[0], 4);
	assert_int_equal(s.gid[3], 7);
	assert_int_equal(s.sigpnd, 0x100);
	assert_int_equal(s.shdpnd, 0x200);
	assert_int_equal(s.sigblk, 0xfffffffe7ffbfeffULL);
	assert_int_equal(s.sigign, 0x1000);
	assert_int_equal(s.sigcgt, 0x400);
	assert_int_equal(s.threads, 3);

	/* A missing field, a short Uid line, junk in a mask. */
	assert_int_equal(ct_proc_parse_status("Pid:\t1\n", 7, &s), -EBADMSG);
	snprintf(buf, sizeof(buf), "%s", status_sample);
	memcpy(strstr(buf, "Uid:\t0\t1\t2\t3"), "Uid:\t0\t1\t2  ", 12);
	assert_int_equal(ct_proc_parse_status(buf, strlen(buf), &s), -EBADMSG);
	snprintf(buf, sizeof(buf), "%s", status_sample);
	strstr(buf, "SigCgt:\t")[9] = 'x';
	assert_int_equal(ct_proc_parse_status(buf, strlen(buf), &s), -EBADMSG);
	snprintf(buf, sizeof(buf), "%s", status_sample);
	memcpy(strstr(buf, "Pid:\t25635\nPPid"), "Pid:\t99999999999", 16);
	assert_int_equal(ct_proc_parse_status(buf, strlen(buf), &s), -EBADMSG);
}

static void test_stat(void **state)
{
	static const char sample[] =
		"26981 (sleep) S 26976 26976 23605 0 -1 4194304 135 0 1 0 0 0 0 0 20 0 1 0 "
		"552099 2990080 403 18446744073709551615 93854984122368 93854984140297 0 0 0 0 "
		"0 0 0 0 0 17 1 0 0 0 0 0\n";
	static const char tricky[] =
		"42 (a) b (c) R 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 7777 0 0\n";
	struct ct_proc_stat s;

	assert_int_equal(ct_proc_parse_stat(sample, strlen(sample), &s), 0);
	assert_int_equal(s.pid, 26981);
	assert_string_equal(s.comm, "sleep");
	assert_int_equal(s.state, 'S');
	assert_int_equal(s.ppid, 26976);
	assert_int_equal(s.pgrp, 26976);
	assert_int_equal(s.session, 23605);
	assert_int_equal(s.start_time, 552099);

	assert_int_equal(ct_proc_parse_stat(tricky, strlen(tricky), &s), 0);
	assert_string_equal(s.comm, "a) b (c");
	assert_int_equal(s.state, 'R');
	assert_int_equal(s.ppid, 1);
	assert_int_equal(s.start_time, 7777);

	assert_int_equal(
		ct_proc_parse_stat("1 () S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5", 46, &s), 0);
	assert_string_equal(s.comm, "");
	assert_int_equal(s.start_time, 5);
	/* Truncated, no ')', a too long comm. */
	assert_int_equal(ct_proc_parse_stat(sample, 40, &s), -EBADMSG);
	assert_int_equal(ct_proc_parse_stat("1 (abc S 0 1 1", 14, &s), -EBADMSG);
	{
		char big[200];
		snprintf(big, sizeof(big), "1 (%080d) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5",
			 0);
		assert_int_equal(ct_proc_parse_stat(big, strlen(big), &s), -EBADMSG);
	}
}

static void test_locks(void **state)
{
	static const char held[] = "pos:\t0\nflags:\t02100002\nmnt_id:\t27\nino:\t10977476\n"
				   "lock:\t1: POSIX  ADVISORY  WRITE 23906 fe:00:10977476 5 14\n"
				   "lock:\t2: POSIX  ADVISORY  READ 23906 fe:00:10977476 100 EOF\n"
				   "lock:\t3: FLOCK  ADVISORY  WRITE 23906 fe:00:10977460 0 EOF\n"
				   "lock:\t4: OFDLCK ADVISORY  READ -1 fe:00:10977572 0 EOF\n"
				   "lock:\t5: LEASE  ACTIVE    READ 23906 fe:00:10977572 0 EOF\n";
	static const char *const bad[] = {
		"lock:\t1: POSIX  ADVISORY  WRITE 23906 fe:00:1 14 5\n", /* end before start */
		"lock:\t1: POSIX  ADVISORY  WRITE 23906 fe:00:1 -1 5\n",
		"lock:\t1: POSIX  ADVISORY  WRITE 23906 fe:00:1 5\n",
		"lock:\t1: POSIX  ADVISORY  WRITE 23906 fe:00:1 5 99999999999999999999999\n",
	};
	_cleanup_free_ struct ct_proc_lock *l = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(ct_proc_parse_locks(held, strlen(held), &l, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(l[0].kind, CT_PROC_LOCK_POSIX);
	assert_true(l[0].write);
	assert_int_equal(l[0].pid, 23906);
	assert_int_equal(l[0].start, 5);
	assert_int_equal(l[0].end, 14);
	assert_int_equal(l[1].kind, CT_PROC_LOCK_POSIX);
	assert_false(l[1].write);
	assert_int_equal(l[1].end, UINT64_MAX);
	assert_int_equal(l[2].kind, CT_PROC_LOCK_FLOCK);
	assert_int_equal(l[3].kind, CT_PROC_LOCK_OFD);
	assert_int_equal(l[3].pid, -1);
	assert_int_equal(l[4].kind, CT_PROC_LOCK_OTHER);
	assert_string_equal(l[4].name, "LEASE ACTIVE READ");
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		struct ct_proc_lock *none = NULL;

		assert_int_equal(ct_proc_parse_locks(bad[i], strlen(bad[i]), &none, &n), -EBADMSG);
		assert_null(none);
	}
}

static void test_fdinfo(void **state)
{
	static const char eventfd[] = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\n"
				      "eventfd-count:                5\neventfd-id: 4\n"
				      "eventfd-semaphore: 0\n";
	static const char epoll[] =
		"pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\n"
		"tfd:        3 events: 80000019 data:                3  pos:0 ino:40f sdev:10\n"
		"tfd:        5 events:       19 data:     7fff00000005  pos:0 ino:6bf5b sdev:f\n";
	static const char timerfd[] = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\nclockid: 1\n"
				      "ticks: 0\nsettime flags: 00\nit_value: (99, 999583540)\n"
				      "it_interval: (1, 0)\n";
	static const char signalfd[] =
		"pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\nsigmask:\t0000000000000201\n";
	static const char inotify[] =
		"pos:\t0\nflags:\t00\nmnt_id:\t17\nino:\t1039\ninotify wd:1 ino:3c51a "
		"sdev:fe00000 mask:100 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 "
		"f_handle:1ac5030000000000\n";
	struct ct_fdinfo f = {};

	assert_int_equal(ct_proc_parse_fdinfo(eventfd, strlen(eventfd), &f), 0);
	assert_int_equal(f.flags, 02000002);
	assert_int_equal(f.mnt_id, 17);
	assert_int_equal(f.ino, 1039);
	assert_int_equal(f.n_kv, 3);
	assert_string_equal(ct_fdinfo_get(&f, "eventfd-count"), "5");
	assert_string_equal(ct_fdinfo_get(&f, "eventfd-semaphore"), "0");
	assert_null(ct_fdinfo_get(&f, "nope"));
	ct_fdinfo_done(&f);

	assert_int_equal(ct_proc_parse_fdinfo(epoll, strlen(epoll), &f), 0);
	assert_int_equal(f.n_tfds, 2);
	assert_int_equal(f.n_kv, 0);
	assert_int_equal(f.tfds[0].fd, 3);
	assert_int_equal(f.tfds[0].events, 0x80000019);
	assert_int_equal(f.tfds[0].data, 3);
	assert_int_equal(f.tfds[0].ino, 0x40f);
	assert_int_equal(f.tfds[0].sdev, 0x10);
	assert_int_equal(f.tfds[1].fd, 5);
	assert_int_equal(f.tfds[1].data, 0x7fff00000005ULL);
	ct_fdinfo_done(&f);

	assert_int_equal(ct_proc_parse_fdinfo(timerfd, strlen(timerfd), &f), 0);
	assert_string_equal(ct_fdinfo_get(&f, "clockid"), "1");
	assert_string_equal(ct_fdinfo_get(&f, "settime flags"), "00");
	assert_string_equal(ct_fdinfo_get(&f, "it_value"), "(99, 999583540)");
	assert_string_equal(ct_fdinfo_get(&f, "it_interval"), "(1, 0)");
	ct_fdinfo_done(&f);

	assert_int_equal(ct_proc_parse_fdinfo(signalfd, strlen(signalfd), &f), 0);
	assert_string_equal(ct_fdinfo_get(&f, "sigmask"), "0000000000000201");
	ct_fdinfo_done(&f);

	assert_int_equal(ct_proc_parse_fdinfo(inotify, strlen(inotify), &f), 0);
	assert_int_equal(f.n_kv, 1);
	assert_string_equal(f.kv[0].key, "inotify wd");
	assert_true(strncmp(f.kv[0].value, "1 ino:3c51a", 11) == 0);
	ct_fdinfo_done(&f);

	/* Missing mnt_id, a broken tfd line, a non-octal flags field. */
	assert_int_equal(ct_proc_parse_fdinfo("pos:\t0\nflags:\t02\n", 17, &f), -EBADMSG);
	assert_int_equal(
		ct_proc_parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t1\ntfd: 3 events: x\n", 44, &f),
		-EBADMSG);
	assert_int_equal(ct_proc_parse_fdinfo("pos:\t0\nflags:\t09\nmnt_id:\t1\n", 27, &f),
			 -EBADMSG);
	assert_null(f.kv);
	assert_null(f.tfds);
}

static void test_pid_name(void **state)
{
	pid_t p;

	assert_int_equal(ct_proc_parse_pid_name("123", &p), 0);
	assert_int_equal(p, 123);
	assert_int_equal(ct_proc_parse_pid_name(".", &p), -EINVAL);
	assert_int_equal(ct_proc_parse_pid_name("0", &p), -EINVAL);
	assert_int_equal(ct_proc_parse_pid_name("012", &p), -EINVAL);
	assert_int_equal(ct_proc_parse_pid_name("12a", &p), -EINVAL);
	assert_int_equal(ct_proc_parse_pid_name("99999999999", &p), -EINVAL);
	assert_int_equal(ct_proc_parse_pid_name("", &p), -EINVAL);
}

static void *sleeper(void *arg)
{
	int fd = *(int *)arg;
	uint64_t v;

	(void)!read(fd, &v, sizeof(v)); /* until the test writes to the eventfd */
	return NULL;
}

static void test_live_self(void **state)
{
	char path[] = "/tmp/ct proc test XXXXXX";
	struct ct_vma_list l = {};
	struct ct_proc_status s;
	struct ct_proc_stat st;
	struct ct_fdinfo f = {};
	bool found_file = false, found_vdso = false, found_vvar = false, found_vclock = false,
	     found_adv = false;
	uint8_t *adv;
	pthread_t thread;
	pid_t *tids = NULL;
	size_t n_tids;
	uint64_t one = 1;
	void *p;
	int fd, efd;

	/* A real mapping of a deleted file with spaces in its name. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4096), 0);
	p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
	assert_true(p != MAP_FAILED);
	assert_int_equal(unlink(path), 0);

	adv = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(adv != MAP_FAILED);
	assert_int_equal(madvise(adv, 4096, MADV_DONTFORK), 0);
	assert_int_equal(madvise(adv + 8192, 4096, MADV_WIPEONFORK), 0);

	assert_int_equal(ct_proc_read_maps(getpid(), &l), 0);
	for (size_t i = 0; i < l.n; i++) {
		const struct ct_vma *v = &l.vmas[i];

		assert_true(v->have_vmflags);
		if (v->start == (uintptr_t)adv) {
			assert_int_equal(v->vmflags,
					 CT_VMF_NORESERVE | CT_VMF_DONTCOPY | CT_VMF_MAYWRITE);
			assert_int_equal(v[1].vmflags, CT_VMF_NORESERVE | CT_VMF_MAYWRITE);
			assert_int_equal(v[2].vmflags,
					 CT_VMF_NORESERVE | CT_VMF_WIPEONFORK | CT_VMF_MAYWRITE);
			found_adv = true;
		}
		if (v->start == (uintptr_t)p) {
			assert_non_null(v->path);
			assert_string_equal(v->path, path);
			assert_true(v->deleted);
			found_file = true;
		}
		found_vdso |= ct_vma_classify(v) == CT_VMA_VDSO;
		found_vvar |= ct_vma_classify(v) == CT_VMA_VVAR;
		found_vclock |= ct_vma_classify(v) == CT_VMA_VVAR_VCLOCK;
	}
	assert_true(found_file && found_vdso && found_vvar && found_adv);
	assert_int_equal(munmap(adv, 3 * 4096), 0);
	if (!found_vclock)
		print_message("note: no [vvar_vclock] on this kernel\n");
	ct_vma_list_done(&l);
	munmap(p, 4096);
	close(fd);

	assert_int_equal(ct_proc_read_status(getpid(), &s), 0);
	assert_int_equal(s.pid, getpid());
	assert_int_equal(s.ppid, getppid());
	assert_int_equal(s.uid[0], getuid());

	assert_int_equal(ct_proc_read_stat(getpid(), &st), 0);
	assert_int_equal(st.pid, getpid());
	assert_int_equal(st.pgrp, getpgrp());
	assert_int_equal(st.session, getsid(0));
	assert_true(st.start_time > 0);

	efd = eventfd(7, EFD_CLOEXEC);
	assert_true(efd >= 0);
	assert_int_equal(ct_proc_read_fdinfo(getpid(), efd, &f), 0);
	assert_string_equal(ct_fdinfo_get(&f, "eventfd-count"), "7");
	ct_fdinfo_done(&f);
	assert_int_equal(ct_proc_read_fdinfo(getpid(), 999999, &f), -ENOENT);

	/* The task listing: this thread plus one more. */
	assert_int_equal(eventfd_read(efd, &one), 0);
	assert_int_equal(pthread_create(&thread, NULL, sleeper, &efd), 0);
	assert_int_equal(ct_proc_read_tasks(getpid(), &tids, &n_tids), 0);
	assert_int_equal(n_tids, 2);
	assert_int_equal(tids[0], getpid());
	assert_true(tids[1] > 0 && tids[1] != getpid());
	assert_int_equal(ct_proc_read_status(tids[1], &s), 0);
	assert_int_equal(s.threads, 2);
	assert_int_equal(s.tgid, getpid());
	free(tids);
	assert_int_equal(eventfd_write(efd, 1), 0);
	pthread_join(thread, NULL);
	close(efd);
}

static void test_live_dead(void **state)
{
	struct ct_vma_list l = {};
	struct ct_proc_status s;
	struct ct_proc_stat st;
	struct ct_fdinfo f = {};
	pid_t *tids = NULL, pid;
	size_t n;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	assert_int_equal(ct_proc_read_maps(pid, &l), -ESRCH);
	assert_int_equal(ct_proc_read_status(pid, &s), -ESRCH);
	assert_int_equal(ct_proc_read_stat(pid, &st), -ESRCH);
	assert_int_equal(ct_proc_read_fdinfo(pid, 0, &f), -ESRCH);
	assert_int_equal(ct_proc_read_tasks(pid, &tids, &n), -ESRCH);
	assert_null(tids);
	assert_int_equal(ct_proc_read_maps(-1, &l), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_maps_sample),    cmocka_unit_test(test_maps_tricky),
		cmocka_unit_test(test_maps_malformed), cmocka_unit_test(test_smaps_vmflags),
		cmocka_unit_test(test_status),	       cmocka_unit_test(test_stat),
		cmocka_unit_test(test_fdinfo),	       cmocka_unit_test(test_locks),
		cmocka_unit_test(test_pid_name),       cmocka_unit_test(test_live_self),
		cmocka_unit_test(test_live_dead),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
