#![no_std]
// The programs are in main.rs and its modules; this empty library lets teardown-user name the crate as a
// build-dependency, so cargo rebuilds the user side when the kernel side changes.
