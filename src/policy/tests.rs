//! Unit tests of the policy module.

use super::*;

#[test]
fn templates_validate() {
    for (name, text) in TEMPLATES {
        let p = parse(text, Path::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.name(), *name);
        assert!(p.require_dicom_deidentification());
    }
}
