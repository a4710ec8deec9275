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
//! text ([`BURNED_IN_RISK_SOP_CLASSES`]: secondary capture, ultrasound, visible-light
//! endoscopy, microscopy and photography, ophthalmic photography) unless the flag explicitly
//! says NO (treated as a claim, as PS3.15 advises). Likewise a face cannot be removed by
//! dropping attributes: objects with Recognizable Visual Features (0028,0302) = YES are refused,
//! and so are objects of classes that photograph the patient's body surface
//! ([`VISUAL_FEATURES_RISK_SOP_CLASSES`]) unless that flag explicitly says NO. The reasoning
//! for every class on these lists, and for the classes left off, is in `docs/ingest.md`. File
//! names can contain patient names: they are shown to the operator but never audited.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

/// Header attributes the reader may consult: what decoding needs, plus the burned-in and
/// recognizable-features flags and the SOP class (for the risk rules). Nothing else is read.
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
    tags::RECOGNIZABLE_VISUAL_FEATURES,
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

/// A SOP class refused for a pixel-level identification risk unless its header says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskClass {
    /// The SOP Class UID (PS3.6 Table A-1).
    pub uid: &'static str,
    /// Its name in PS3.6.
    pub name: &'static str,
    /// The family it belongs to, in the words of the refusal.
    pub family: &'static str,
}

const fn class(uid: &'static str, name: &'static str, family: &'static str) -> RiskClass {
    RiskClass { uid, name, family }
}

const SC: &str = "secondary capture: screen captures and digitised film or paper";
const US: &str = "ultrasound: the scanner renders patient and exam text into the image";
const VL: &str =
    "visible-light endoscopy and microscopy: camera frames with on-screen text, slide labels";
const PHOTO: &str = "visible-light photography of the patient";
const OP: &str = "ophthalmic photography: fundus cameras stamp names and dates into the image";

/// SOP classes that often carry burned-in text: refused unless Burned In Annotation (0028,0301)
/// explicitly says NO. Why each is here, and why other classes are not: `docs/ingest.md`.
pub const BURNED_IN_RISK_SOP_CLASSES: &[RiskClass] = &[
    class(
        "1.2.840.10008.5.1.4.1.1.7",
        "Secondary Capture Image Storage",
        SC,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.7.1",
        "Multi-frame Single Bit Secondary Capture Image Storage",
        SC,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.7.2",
        "Multi-frame Grayscale Byte Secondary Capture Image Storage",
        SC,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.7.3",
        "Multi-frame Grayscale Word Secondary Capture Image Storage",
        SC,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.7.4",
        "Multi-frame True Color Secondary Capture Image Storage",
        SC,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.6",
        "Ultrasound Image Storage (Retired)",
        US,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.6.1",
        "Ultrasound Image Storage",
        US,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.3",
        "Ultrasound Multi-frame Image Storage (Retired)",
        US,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.3.1",
        "Ultrasound Multi-frame Image Storage",
        US,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.6.2",
        "Enhanced US Volume Storage",
        US,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.6.3",
        "Photoacoustic Image Storage",
        US,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1",
        "VL Image Storage - Trial (Retired)",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.2",
        "VL Multi-frame Image Storage - Trial (Retired)",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.1",
        "VL Endoscopic Image Storage",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",
        "Video Endoscopic Image Storage",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.2",
        "VL Microscopic Image Storage",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.2.1",
        "Video Microscopic Image Storage",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.3",
        "VL Slide-Coordinates Microscopic Image Storage",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.6",
        "VL Whole Slide Microscopy Image Storage",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.8",
        "Confocal Microscopy Image Storage",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.9",
        "Confocal Microscopy Tiled Pyramidal Image Storage",
        VL,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.4",
        "VL Photographic Image Storage",
        PHOTO,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",
        "Video Photographic Image Storage",
        PHOTO,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.7",
        "Dermoscopic Photography Image Storage",
        PHOTO,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.5.1",
        "Ophthalmic Photography 8 Bit Image Storage",
        OP,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.5.2",
        "Ophthalmic Photography 16 Bit Image Storage",
        OP,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.5.5",
        "Wide Field Ophthalmic Photography Stereographic Projection Image Storage",
        OP,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.5.6",
        "Wide Field Ophthalmic Photography 3D Coordinates Image Storage",
        OP,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.104.1",
        "Encapsulated PDF Storage",
        "encapsulated documents: scanned or printed pages",
    ),
];

/// SOP classes that photograph the patient's body surface (a face, a tattoo): refused unless
/// Recognizable Visual Features (0028,0302) explicitly says NO (on top of the burned-in rule).
pub const VISUAL_FEATURES_RISK_SOP_CLASSES: &[RiskClass] = &[
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.4",
        "VL Photographic Image Storage",
        PHOTO,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",
        "Video Photographic Image Storage",
        PHOTO,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1.7",
        "Dermoscopic Photography Image Storage",
        PHOTO,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.1",
        "VL Image Storage - Trial (Retired)",
        PHOTO,
    ),
    class(
        "1.2.840.10008.5.1.4.1.1.77.2",
        "VL Multi-frame Image Storage - Trial (Retired)",
        PHOTO,
    ),
];

/// The risk class of `uid` in `list`.
fn risk(list: &[RiskClass], uid: &str) -> Option<RiskClass> {
    list.iter().find(|c| c.uid == uid).copied()
}

/// Why a DICOM object is refused for what its pixels may show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PixelRisk {
    /// Burned-in text (Burned In Annotation (0028,0301), or the SOP class).
    BurnedIn(String),
    /// Recognizable visual features (Recognizable Visual Features (0028,0302), or the SOP
    /// class).
    VisualFeatures(String),
}

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

    fn flag(&self, tag: Tag) -> Option<String> {
        self.string(tag).map(|s| s.to_ascii_uppercase())
    }

    /// `Some(reason)` if the object must be refused for burned-in text.
    pub fn burned_in(&self) -> Option<String> {
        match self.flag(tags::BURNED_IN_ANNOTATION).as_deref() {
            Some("YES") => Some("Burned In Annotation (0028,0301) is YES".into()),
            Some("NO") => None,
            _ => {
                let sop = self.string(tags::SOP_CLASS_UID).unwrap_or_default();
                risk(BURNED_IN_RISK_SOP_CLASSES, &sop).map(|c| {
                    format!(
                        "its SOP class, {} ({}), often carries burned-in text ({}), and Burned In Annotation (0028,0301) does not say NO",
                        c.name, c.uid, c.family
                    )
                })
            }
        }
    }

    /// `Some(reason)` if the object must be refused for recognizable visual features.
    pub fn visual_features(&self) -> Option<String> {
        match self.flag(tags::RECOGNIZABLE_VISUAL_FEATURES).as_deref() {
            Some("YES") => Some(
                "Recognizable Visual Features (0028,0302) is YES: the pixels show features, such as a face, that can identify the patient".into(),
            ),
            Some("NO") => None,
            _ => {
                let sop = self.string(tags::SOP_CLASS_UID).unwrap_or_default();
                risk(VISUAL_FEATURES_RISK_SOP_CLASSES, &sop).map(|c| {
                    format!(
                        "its SOP class, {} ({}), photographs the patient and Recognizable Visual Features (0028,0302) does not say NO",
                        c.name, c.uid
                    )
                })
            }
        }
    }

    /// The first pixel-level risk that refuses the object: burned-in text, then recognizable
    /// visual features.
    pub fn pixel_risk(&self) -> Option<PixelRisk> {
        self.burned_in()
            .map(PixelRisk::BurnedIn)
            .or_else(|| self.visual_features().map(PixelRisk::VisualFeatures))
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

    /// Every class on the risk lists is a real PS3.6 SOP class (checked against the DICOM
    /// dictionary crate, names included), and none is listed twice.
    #[test]
    #[allow(deprecated)] // retired UIDs are deprecated constants in the dictionary
    fn risk_classes_are_the_dictionary_s() {
        use dicom_dictionary_std::uids as u;
        let known = [
            (
                u::SECONDARY_CAPTURE_IMAGE_STORAGE,
                "Secondary Capture Image Storage",
            ),
            (
                u::MULTI_FRAME_SINGLE_BIT_SECONDARY_CAPTURE_IMAGE_STORAGE,
                "Multi-frame Single Bit Secondary Capture Image Storage",
            ),
            (
                u::MULTI_FRAME_GRAYSCALE_BYTE_SECONDARY_CAPTURE_IMAGE_STORAGE,
                "Multi-frame Grayscale Byte Secondary Capture Image Storage",
            ),
            (
                u::MULTI_FRAME_GRAYSCALE_WORD_SECONDARY_CAPTURE_IMAGE_STORAGE,
                "Multi-frame Grayscale Word Secondary Capture Image Storage",
            ),
            (
                u::MULTI_FRAME_TRUE_COLOR_SECONDARY_CAPTURE_IMAGE_STORAGE,
                "Multi-frame True Color Secondary Capture Image Storage",
            ),
            (
                u::ULTRASOUND_IMAGE_STORAGE_RETIRED,
                "Ultrasound Image Storage (Retired)",
            ),
            (u::ULTRASOUND_IMAGE_STORAGE, "Ultrasound Image Storage"),
            (
                u::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE_RETIRED,
                "Ultrasound Multi-frame Image Storage (Retired)",
            ),
            (
                u::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
                "Ultrasound Multi-frame Image Storage",
            ),
            (u::ENHANCED_US_VOLUME_STORAGE, "Enhanced US Volume Storage"),
            (
                u::PHOTOACOUSTIC_IMAGE_STORAGE,
                "Photoacoustic Image Storage",
            ),
            (
                u::VL_IMAGE_STORAGE_TRIAL,
                "VL Image Storage - Trial (Retired)",
            ),
            (
                u::VL_MULTI_FRAME_IMAGE_STORAGE_TRIAL,
                "VL Multi-frame Image Storage - Trial (Retired)",
            ),
            (
                u::VL_ENDOSCOPIC_IMAGE_STORAGE,
                "VL Endoscopic Image Storage",
            ),
            (
                u::VIDEO_ENDOSCOPIC_IMAGE_STORAGE,
                "Video Endoscopic Image Storage",
            ),
            (
                u::VL_MICROSCOPIC_IMAGE_STORAGE,
                "VL Microscopic Image Storage",
            ),
            (
                u::VIDEO_MICROSCOPIC_IMAGE_STORAGE,
                "Video Microscopic Image Storage",
            ),
            (
                u::VL_SLIDE_COORDINATES_MICROSCOPIC_IMAGE_STORAGE,
                "VL Slide-Coordinates Microscopic Image Storage",
            ),
            (
                u::VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE,
                "VL Whole Slide Microscopy Image Storage",
            ),
            (
                u::CONFOCAL_MICROSCOPY_IMAGE_STORAGE,
                "Confocal Microscopy Image Storage",
            ),
            (
                u::CONFOCAL_MICROSCOPY_TILED_PYRAMIDAL_IMAGE_STORAGE,
                "Confocal Microscopy Tiled Pyramidal Image Storage",
            ),
            (
                u::VL_PHOTOGRAPHIC_IMAGE_STORAGE,
                "VL Photographic Image Storage",
            ),
            (
                u::VIDEO_PHOTOGRAPHIC_IMAGE_STORAGE,
                "Video Photographic Image Storage",
            ),
            (
                u::DERMOSCOPIC_PHOTOGRAPHY_IMAGE_STORAGE,
                "Dermoscopic Photography Image Storage",
            ),
            (
                u::OPHTHALMIC_PHOTOGRAPHY8_BIT_IMAGE_STORAGE,
                "Ophthalmic Photography 8 Bit Image Storage",
            ),
            (
                u::OPHTHALMIC_PHOTOGRAPHY16_BIT_IMAGE_STORAGE,
                "Ophthalmic Photography 16 Bit Image Storage",
            ),
            (
                u::WIDE_FIELD_OPHTHALMIC_PHOTOGRAPHY_STEREOGRAPHIC_PROJECTION_IMAGE_STORAGE,
                "Wide Field Ophthalmic Photography Stereographic Projection Image Storage",
            ),
            (
                u::WIDE_FIELD_OPHTHALMIC_PHOTOGRAPHY3_D_COORDINATES_IMAGE_STORAGE,
                "Wide Field Ophthalmic Photography 3D Coordinates Image Storage",
            ),
            (u::ENCAPSULATED_PDF_STORAGE, "Encapsulated PDF Storage"),
        ];
        for list in [BURNED_IN_RISK_SOP_CLASSES, VISUAL_FEATURES_RISK_SOP_CLASSES] {
            let mut seen = std::collections::BTreeSet::new();
            for c in list {
                assert!(seen.insert(c.uid), "{} listed twice", c.uid);
                assert!(
                    known.contains(&(c.uid, c.name)),
                    "{} {:?} is not a dictionary SOP class with that name",
                    c.uid,
                    c.name
                );
            }
        }
        assert_eq!(BURNED_IN_RISK_SOP_CLASSES.len(), known.len());
        // Every class refused for visual features is also refused for burned-in text.
        for c in VISUAL_FEATURES_RISK_SOP_CLASSES {
            assert!(
                risk(BURNED_IN_RISK_SOP_CLASSES, c.uid).is_some(),
                "{}",
                c.uid
            );
        }
    }

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
