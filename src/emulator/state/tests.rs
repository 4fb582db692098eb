//! Table tests of the state rules.

use super::*;

#[test]
fn placeholder() {
    let s = State::new(Edition::default(), false);
    assert_eq!(s.users.len(), 1);
}
