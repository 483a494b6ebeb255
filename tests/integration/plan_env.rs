//! `plan::derivation` reads `SOURCE_DATE_EPOCH` from the environment. The only test in this
//! binary, so changing the variable races with nothing.

use std::ffi::OsStr;

use hc1img::plan;
use hc1img::profile::{self, Overrides};

#[test]
fn derivation_reads_source_date_epoch_from_the_environment() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path();
    std::fs::write(
        p.join("board.toml"),
        "name = \"b\"\narch = \"armv7h\"\nconsoles = [\"ttyS0\"]\nroot_device = \"/dev/sda1\"\n\
         boot_txt = \"setenv bootargs \\\"{bootargs}\\\"\"\n\
         [sd]\nfirst_sector = 8192\npartition_size = \"1MiB\"\nblobs = [{ file = \"u-boot.bin\", sector = 1 }]\n",
    )
    .expect("write");
    std::fs::write(
        p.join("p.toml"),
        "name = \"p\"\nboard = \"board.toml\"\n[secrets]\ns = { env = \"HC1IMG_TEST_SECRET\", bake = true }\n",
    )
    .expect("write");

    // SAFETY: this binary has a single test, so no other thread reads the environment.
    unsafe {
        std::env::set_var("HC1IMG_TEST_SECRET", "one");
        std::env::set_var("SOURCE_DATE_EPOCH", "1600000000");
    }
    let prof = profile::load(&p.join("p.toml"), &Overrides::default()).expect("load");
    let from_env = plan::derivation(&prof).expect("derive");
    let explicit = plan::derivation_with(&prof, Some(OsStr::new("1600000000"))).expect("derive");
    let unset = plan::derivation_with(&prof, None).expect("derive");
    assert_eq!(from_env.hash, explicit.hash);
    assert_ne!(from_env.hash, unset.hash);

    // An env-var secret is read when asked, and its value moves the hash.
    let s = prof.secret("s").expect("secret");
    assert_eq!(s.bytes(), b"one");
    assert!(!format!("{s:?}").contains("one"));
    unsafe {
        std::env::set_var("HC1IMG_TEST_SECRET", "two");
    }
    assert_ne!(plan::derivation(&prof).expect("derive").hash, from_env.hash);

    // An unset env secret is a load error naming the key.
    unsafe {
        std::env::remove_var("HC1IMG_TEST_SECRET");
        std::env::remove_var("SOURCE_DATE_EPOCH");
    }
    let err = match profile::load(&p.join("p.toml"), &Overrides::default()) {
        Ok(_) => panic!("loaded with the secret's variable unset"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("p.toml:4: secrets.s.env: environment variable HC1IMG_TEST_SECRET is not set"),
        "{err}"
    );
}
