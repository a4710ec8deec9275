//! DICOM de-identification by construction (PS3.15 Annex E, Basic Application Level
//! Confidentiality Profile, for what Retort keeps).
//!
//! Retort does not rewrite DICOM files: it keeps **only pixels and a label**. The reader may
//! consult the header attributes in [`DECODING_TAGS`] — what decoding needs (geometry, sample
//! format, photometric interpretation, palette, rescale, VOI window) and the Burned In
//! Annotation flag that decides refusal — through [`DecodeView`], which refuses any other tag.
//! No UID, name, date, ID, description or private attribute is ever read into memory that
//! leaves the reader, so none can reach the dataset, the logs, the audit details or the
//! partner package. What is dropped is only *counted* ([`Inventory`]): the audit record says
//! how many identifying attributes (by the Annex E table rows in [`IDENTIFYING_TAGS`]) and
//! private attributes were present and dropped.
//!
//! Burned-in text cannot be removed by dropping attributes: objects with Burned In Annotation
//! (0028,0301) = YES are refused, and so are objects of SOP classes known to carry burned-in
//! text (secondary capture, ultrasound) unless the flag explicitly says NO (treated as a claim,
//! as PS3.15 advises). File names can contain patient names: they are shown to the operator
//! but never audited.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// Header attributes the reader may consult: what decoding needs, plus the burned-in flag and
/// the SOP class (for the burned-in risk rule). Nothing else is read.
pub const DECODING_TAGS: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::SAMPLES_PER_PIXEL,
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::PLANAR_CONFIGURATION,
    tags::NUMBER_OF_FRAMES,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::BITS_STORED,
    tags::HIGH_BIT,
    tags::PIXEL_REPRESENTATION,
    tags::BURNED_IN_ANNOTATION,
    tags::RESCALE_INTERCEPT,
    tags::RESCALE_SLOPE,
    tags::WINDOW_CENTER,
    tags::WINDOW_WIDTH,
    tags::VOILUT_FUNCTION,
    tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
    tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
    tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
    tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
    tags::PIXEL_DATA,
];

/// Identifying attributes of the PS3.15 Annex E basic profile (Table E.1-1 rows most often
/// present). Used only to count what was dropped
/// and, in tests, to prove none of them is in [`DECODING_TAGS`].
pub const IDENTIFYING_TAGS: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_BIRTH_TIME,
    tags::PATIENT_SEX,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::OTHER_PATIENT_NAMES,
    tags::PATIENT_ADDRESS,
    tags::PATIENT_TELEPHONE_NUMBERS,
    Tag(0x0010, 0x2160), // Ethnic Group (retired in the dictionary, still in Annex E)
    Tag(0x0010, 0x1090), // Medical Record Locator (retired in the dictionary)
    tags::PATIENT_COMMENTS,
    tags::ADDITIONAL_PATIENT_HISTORY,
    tags::ACCESSION_NUMBER,
    tags::STUDY_ID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::SERIES_DATE,
    tags::ACQUISITION_DATE,
    tags::CONTENT_DATE,
    tags::SERIES_TIME,
    tags::ACQUISITION_TIME,
    tags::CONTENT_TIME,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::SOP_INSTANCE_UID,
    tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
    tags::FRAME_OF_REFERENCE_UID,
    tags::INSTANCE_CREATOR_UID,
    tags::INSTITUTION_NAME,
    tags::INSTITUTION_ADDRESS,
    tags::INSTITUTIONAL_DEPARTMENT_NAME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::REFERRING_PHYSICIAN_ADDRESS,
    tags::PERFORMING_PHYSICIAN_NAME,
    tags::OPERATORS_NAME,
    tags::STATION_NAME,
    tags::DEVICE_SERIAL_NUMBER,
    tags::STUDY_DESCRIPTION,
    tags::SERIES_DESCRIPTION,
    tags::IMAGE_COMMENTS,
    tags::ADMISSION_ID,
    tags::REQUESTED_PROCEDURE_ID,
    tags::REQUESTING_PHYSICIAN,
];

/// SOP classes that often carry burned-in text (secondary capture family, ultrasound): refused
/// unless Burned In Annotation explicitly says NO.
pub const BURNED_IN_RISK_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.1",   // Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",   // Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",   // Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",   // Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.6.1",   // Ultrasound
    "1.2.840.10008.5.1.4.1.1.3.1",   // Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
];

/// Read-only access to the decoding attributes of an object, and nothing else.
pub struct DecodeView<'a>(&'a DefaultDicomObject);

impl std::fmt::Debug for DecodeView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecodeView(..)") // never print header values
    }
}

impl<'a> DecodeView<'a> {
    /// Wrap an object.
    pub fn new(obj: &'a DefaultDicomObject) -> DecodeView<'a> {
        DecodeView(obj)
    }

    fn element(&self, tag: Tag) -> Option<&'a dicom_object::mem::InMemElement> {
        if !DECODING_TAGS.contains(&tag) {
            debug_assert!(false, "tag {tag} is not a decoding attribute");
            return None;
        }
        self.0.element_opt(tag).ok().flatten()
    }

    /// A string attribute, trimmed (decoding attributes only).
    pub fn string(&self, tag: Tag) -> Option<String> {
        let e = self.element(tag)?;
        e.to_str().ok().map(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string()
        })
    }

    /// An integer attribute (first value).
    pub fn int(&self, tag: Tag) -> Option<i64> {
        self.element(tag)?.to_int::<i64>().ok()
    }

    /// All integer values of an attribute.
    pub fn ints(&self, tag: Tag) -> Option<Vec<i64>> {
        self.element(tag)?.to_multi_int::<i64>().ok()
    }

    /// Raw bytes of an attribute (palette tables).
    pub fn bytes(&self, tag: Tag) -> Option<Vec<u8>> {
        self.element(tag)?.to_bytes().ok().map(|b| b.into_owned())
    }

    /// True if the attribute is present.
    pub fn has(&self, tag: Tag) -> bool {
        self.element(tag).is_some()
    }

    /// `Some(reason)` if the object must be refused for burned-in text.
    pub fn burned_in(&self) -> Option<&'static str> {
        match self
            .string(tags::BURNED_IN_ANNOTATION)
            .map(|s| s.to_ascii_uppercase())
            .as_deref()
        {
            Some("YES") => Some("Burned In Annotation (0028,0301) is YES"),
            Some("NO") => None,
            _ => {
                let sop = self.string(tags::SOP_CLASS_UID).unwrap_or_default();
                BURNED_IN_RISK_SOP_CLASSES
                    .contains(&sop.as_str())
                    .then_some("its SOP class (secondary capture or ultrasound) often carries burned-in text and Burned In Annotation (0028,0301) does not say NO")
            }
        }
    }
}

/// What was present in a header and dropped (counts only; no values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Top-level attributes in the data set.
    pub attributes: usize,
    /// Identifying attributes from [`IDENTIFYING_TAGS`] that were present.
    pub identifying: usize,
    /// Private attributes (odd group).
    pub private: usize,
}

impl Inventory {
    /// Count the attributes of `obj` (tags only; values are not read).
    pub fn of(obj: &DefaultDicomObject) -> Inventory {
        let mut inv = Inventory::default();
        for e in obj.iter() {
            let tag = e.header().tag;
            inv.attributes += 1;
            if IDENTIFYING_TAGS.contains(&tag) {
                inv.identifying += 1;
            }
            if tag.group() % 2 == 1 {
                inv.private += 1;
            }
        }
        // The file meta group carries the Media Storage SOP Instance UID.
        inv.identifying += 1;
        inv
    }

    /// Add another file's counts.
    pub fn add(&mut self, o: Inventory) {
        self.attributes += o.attributes;
        self.identifying += o.identifying;
        self.private += o.private;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_identifying_tag_is_a_decoding_tag() {
        for t in IDENTIFYING_TAGS {
            assert!(!DECODING_TAGS.contains(t), "{t} is identifying");
        }
        // Nothing from the patient, study or series modules, no dates, no private groups.
        for t in DECODING_TAGS {
            assert!(t.group() % 2 == 0, "{t} is private");
            assert!(
                ![0x0010, 0x0020, 0x0032, 0x0038, 0x0040].contains(&t.group()),
                "{t} belongs to a patient/study module"
            );
        }
    }
}
