//! `retort ingest` and `retort datasets`: real data (Fashion-MNIST IDX, pydicom's DICOM files),
//! PNG folders and Parquet tables built here, golden error cases, de-identification and the
//! workspace lock. See: issue 2.

use std::path::{Path, PathBuf};

use crate::util::*;

/// The shared data folder, with the `/work/shared/data` fallback.
fn data() -> Option<PathBuf> {
    shared_data().or_else(|| {
        let p = PathBuf::from("/work/shared/data");
        p.is_dir().then_some(p)
    })
}

macro_rules! need_data {
    () => {
        match data() {
            Some(p) => p,
            None => {
                eprintln!("SKIPPED: ../shared/data is absent");
                return;
            }
        }
    };
}

fn no_dataset_left(t: &TestWs) {
    let left: Vec<_> = std::fs::read_dir(t.ws.join("datasets"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "datasets/ holds {left:?}");
}

fn last_record(t: &TestWs) -> serde_json::Value {
    t.audit_records().pop().unwrap()
}

// ---------------------------------------------------------------- fixtures

fn png_bytes(c: usize, h: usize, w: usize, v: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let ct = if c == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        &vec![v; c * h * w],
        w as u32,
        h as u32,
        ct,
    )
    .unwrap();
    out
}

/// `root/<class>/<i>.png` for each (class, channels, h, w, count).
fn png_folder(root: &Path, spec: &[(&str, usize, usize, usize, usize)]) {
    for (class, c, h, w, n) in spec {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..*n {
            std::fs::write(
                d.join(format!("{i}.png")),
                png_bytes(*c, *h, *w, (i * 20) as u8),
            )
            .unwrap();
        }
    }
}

fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// A minimal DICOM Part 10 writer (explicit VR little endian) for crafted fixtures.
mod dcm {
    fn el(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], val: &[u8]) {
        let mut v = val.to_vec();
        if v.len() % 2 == 1 {
            v.push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
        }
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(&v);
    }

    pub struct Spec<'a> {
        pub ts: &'a str,
        pub sop_class: &'a str,
        pub photometric: &'a str,
        pub burned_in: Option<&'a str>,
        /// Recognizable Visual Features (0028,0302).
        pub recognizable: Option<&'a str>,
        pub h: u16,
        pub w: u16,
        pub pixels: &'a [u8],
        pub window: Option<(&'a str, &'a str)>,
        pub encapsulated: bool,
    }

    pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    pub const PATIENT: &str = "DOE^JANE^QUINCY";
    pub const PATIENT_ID: &str = "PID-7734-XQ";
    pub const STUDY_UID: &str = "1.2.826.0.1.3680043.2.1125.99887766";

    pub fn file(s: &Spec) -> Vec<u8> {
        let mut meta = Vec::new();
        el(&mut meta, 2, 1, b"OB", &[0, 1]);
        el(&mut meta, 2, 2, b"UI", s.sop_class.as_bytes());
        el(&mut meta, 2, 3, b"UI", b"1.2.3.4.5.6.7");
        el(&mut meta, 2, 0x10, b"UI", s.ts.as_bytes());
        el(&mut meta, 2, 0x12, b"UI", b"1.2.3.4");
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        el(&mut out, 2, 0, b"UL", &(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        el(&mut out, 8, 0x16, b"UI", s.sop_class.as_bytes());
        el(&mut out, 8, 0x18, b"UI", b"1.2.3.4.5.6.7");
        el(&mut out, 8, 0x20, b"DA", b"19700101");
        el(&mut out, 0x10, 0x10, b"PN", PATIENT.as_bytes());
        el(&mut out, 0x10, 0x20, b"LO", PATIENT_ID.as_bytes());
        el(&mut out, 0x20, 0x0d, b"UI", STUDY_UID.as_bytes());
        el(&mut out, 0x28, 2, b"US", &1u16.to_le_bytes());
        el(&mut out, 0x28, 4, b"CS", s.photometric.as_bytes());
        el(&mut out, 0x28, 0x10, b"US", &s.h.to_le_bytes());
        el(&mut out, 0x28, 0x11, b"US", &s.w.to_le_bytes());
        el(&mut out, 0x28, 0x100, b"US", &8u16.to_le_bytes());
        el(&mut out, 0x28, 0x101, b"US", &8u16.to_le_bytes());
        el(&mut out, 0x28, 0x102, b"US", &7u16.to_le_bytes());
        el(&mut out, 0x28, 0x103, b"US", &0u16.to_le_bytes());
        if let Some(b) = s.burned_in {
            el(&mut out, 0x28, 0x301, b"CS", b.as_bytes());
        }
        if let Some(r) = s.recognizable {
            el(&mut out, 0x28, 0x302, b"CS", r.as_bytes());
        }
        if let Some((c, w)) = s.window {
            el(&mut out, 0x28, 0x1050, b"DS", c.as_bytes());
            el(&mut out, 0x28, 0x1051, b"DS", w.as_bytes());
        }
        if s.encapsulated {
            out.extend_from_slice(&0x7fe0u16.to_le_bytes());
            out.extend_from_slice(&0x10u16.to_le_bytes());
            out.extend_from_slice(b"OB\0\0");
            out.extend_from_slice(&u32::MAX.to_le_bytes());
            for item in [&[][..], s.pixels] {
                out.extend_from_slice(&[0xfe, 0xff, 0x00, 0xe0]);
                out.extend_from_slice(&(item.len() as u32).to_le_bytes());
                out.extend_from_slice(item);
            }
            out.extend_from_slice(&[0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
        } else {
            el(&mut out, 0x7fe0, 0x10, b"OB", s.pixels);
        }
        out
    }

    pub fn simple(photometric: &str, pixels: &[u8], h: u16, w: u16) -> Vec<u8> {
        file(&Spec {
            ts: EXPLICIT_LE,
            sop_class: CT,
            photometric,
            burned_in: None,
            recognizable: None,
            h,
            w,
            pixels,
            window: None,
            encapsulated: false,
        })
    }
}

// ---------------------------------------------------------------- real data

const FASHION: &str = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot";

#[test]
fn fashion_mnist_keeps_the_official_split() {
    let data = need_data!();
    let t = TestWs::init();
    let src = data.join("fashion-mnist");
    let t0 = std::time::Instant::now();
    let r = t.run(&[
        "--json",
        "ingest",
        src.to_str().unwrap(),
        "--name",
        "fashion",
        "--class-names",
        FASHION,
    ]);
    r.expect(0);
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("fashion-mnist ingest took {secs:.1} s");
    assert!(secs < 60.0, "ingest took {secs} s");
    let j = r.json();
    assert_eq!(j["train_count"], 60000);
    assert_eq!(j["test_count"], 10000);
    assert_eq!(j["shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(j["split"]["kind"], "official");
    assert_eq!(j["format"], "idx");

    let s = t.run(&["--json", "datasets", "show", "fashion"]);
    s.expect(0);
    let j = s.json();
    for k in [
        "name",
        "shape",
        "classes",
        "train_count",
        "test_count",
        "per_class_train",
    ] {
        assert!(!j[k].is_null(), "{k} missing");
    }
    assert_eq!(j["per_class_train"], serde_json::json!(vec![6000; 10]));
    assert_eq!(j["classes"][9], "Ankle boot");
    let sheet = PathBuf::from(j["contact_sheet"].as_str().unwrap());
    let img = image::open(&sheet).unwrap();
    assert!(img.width() > 200 && img.height() > 10 * 28);
    // --out chooses the place.
    let out = t.path("sheet.png");
    t.run(&[
        "datasets",
        "show",
        "fashion",
        "--out",
        out.to_str().unwrap(),
    ])
    .expect(0)
    .stdout_has(&[out.to_str().unwrap()]);
    assert!(out.exists());
    t.run(&["datasets", "list"])
        .expect(0)
        .stdout_has(&["fashion", "60000"]);

    // Audit: intent before reading, then ok with counts and no paths.
    let recs = t.audit_records();
    let ingest: Vec<_> = recs
        .iter()
        .filter(|r| r["action"] == "dataset.ingest")
        .collect();
    assert_eq!(ingest.len(), 2);
    assert_eq!(ingest[0]["outcome"], "intent");
    assert_eq!(ingest[1]["outcome"], "ok");
    assert_eq!(ingest[1]["details"]["format"], "idx");
    assert_eq!(ingest[1]["details"]["skipped"], 0);
    assert!(!ingest[1].to_string().contains("fashion-mnist"));
}

/// Copy the shared DICOM files into class folders: `valid` and `crafted` (crafted files plus
/// the edge files, which are all refused).
fn dicom_tree(data: &Path, root: &Path) -> usize {
    let mut n = 0;
    for (sub, class) in [("valid", "valid"), ("edge", "crafted")] {
        let dst = root.join(class);
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(data.join("dicom").join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "dcm") {
                std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
                n += 1;
            }
        }
    }
    // A third class of crafted MR-like images, one with a patient name as its file name.
    let d = root.join("crafted");
    std::fs::create_dir_all(&d).unwrap();
    for i in 0..3u8 {
        let px: Vec<u8> = (0..64).map(|k| k * 4 + i).collect();
        std::fs::write(
            d.join(format!("DOE^JANE_{i}.dcm")),
            dcm::simple("MONOCHROME2", &px, 8, 8),
        )
        .unwrap();
        n += 1;
    }
    n
}

/// Header strings that must never leave the reader: every identifying attribute's value.
fn phi_strings(data: &Path) -> Vec<String> {
    use retort::ingest::deid::IDENTIFYING_TAGS;
    let mut v = vec![
        dcm::PATIENT.to_string(),
        dcm::PATIENT_ID.to_string(),
        dcm::STUDY_UID.to_string(),
    ];
    for e in std::fs::read_dir(data.join("dicom/valid")).unwrap() {
        let Ok(obj) = dicom_object::open_file(e.unwrap().path()) else {
            continue;
        };
        for tag in IDENTIFYING_TAGS {
            if let Ok(Some(el)) = obj.element_opt(*tag) {
                if let Ok(s) = el.to_str() {
                    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
                    // Long enough to be specific, and not a filler like "000000000".
                    let filler = s.chars().all(|c| s.starts_with(c));
                    if s.len() >= 6 && !filler {
                        v.push(s.to_string());
                    }
                }
            }
        }
    }
    v.sort();
    v.dedup();
    v
}

fn all_bytes(dir: &Path, out: &mut Vec<u8>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_bytes(&p, out);
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
}

#[test]
fn dicom_files_are_read_or_refused_and_deidentified() {
    let data = need_data!();
    let t = TestWs::init();
    let src = t.path("dicom");
    let total = dicom_tree(&data, &src);

    // Without --skip-invalid the first bad file fails everything; nothing is stored.
    let r = t.run(&[
        "ingest",
        src.to_str().unwrap(),
        "--name",
        "d",
        "--size",
        "32x32",
        "--channels",
        "1",
    ]);
    r.expect(1).stderr_has(&["error: ", ".dcm", "hint: "]);
    no_dataset_left(&t);
    let rec = last_record(&t);
    assert_eq!(rec["outcome"], "error");
    assert!(rec["reason"].as_str().unwrap().starts_with("ingest-dicom-"));
    assert!(
        !rec.to_string().contains(".dcm"),
        "audit names a file: {rec}"
    );

    let r = t.run(&[
        "--json",
        "ingest",
        src.to_str().unwrap(),
        "--name",
        "d",
        "--size",
        "32x32",
        "--channels",
        "1",
        "--skip-invalid",
        "--test-fraction",
        "0.3",
    ]);
    r.expect(0);
    let j = r.json();
    let read = j["files_read"].as_u64().unwrap() as usize;
    let skipped = j["skipped"].as_array().unwrap();
    assert_eq!(read + skipped.len(), total, "every file read or refused");
    for s in skipped {
        assert!(
            s["code"].as_str().unwrap().starts_with("ingest-dicom-"),
            "{s}"
        );
        assert!(!s["reason"].as_str().unwrap().is_empty());
    }
    // The edge files are all refused, with reasons; the real images are read.
    for f in [
        "MR_truncated.dcm",
        "no_meta.dcm",
        "meta_missing_tsyntax.dcm",
    ] {
        assert!(
            skipped
                .iter()
                .any(|s| s["file"].as_str().unwrap().ends_with(f)),
            "{f} not refused"
        );
    }
    for f in [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "chest_xray_RG1_UNCR.dcm",
        "rtdose.dcm",
    ] {
        assert!(
            !skipped
                .iter()
                .any(|s| s["file"].as_str().unwrap().ends_with(f)),
            "{f} was refused: {skipped:?}"
        );
    }
    let notes = j["notes"].to_string();
    assert!(notes.contains("first frame taken"), "{notes}");
    assert!(notes.contains("MONOCHROME1"), "{notes}");

    // De-identification: no identifying header value anywhere in the workspace or output.
    let mut blob = Vec::new();
    all_bytes(&t.ws, &mut blob);
    let blob = String::from_utf8_lossy(&blob).into_owned();
    let show = t.run(&["datasets", "show", "d"]);
    show.expect(0);
    let phi = phi_strings(&data);
    assert!(phi.len() > 5, "{phi:?}");
    for s in &phi {
        assert!(!blob.contains(s.as_str()), "{s:?} reached the workspace");
        assert!(
            !r.stdout.contains(s.as_str()) && !r.stderr.contains(s.as_str()),
            "{s:?} printed"
        );
        assert!(!show.stdout.contains(s.as_str()));
    }
    // File names can hold patient names: the audit log has counts and codes, not names.
    let audit = t.audit_records();
    let text = serde_json::to_string(&audit).unwrap();
    assert!(!text.contains("DOE"), "a file name reached the audit log");
    let ok = audit
        .iter()
        .rev()
        .find(|r| r["action"] == "dataset.ingest")
        .unwrap();
    assert_eq!(ok["outcome"], "ok");
    assert!(ok["details"]["skipped_reasons"].as_object().unwrap().len() >= 2);
    assert!(
        ok["details"]["deid"]["identifying_attributes_dropped"]
            .as_u64()
            .unwrap()
            > 10
    );
}

#[test]
fn big_endian_implicit_rle_and_jpeg2000_decode_alike() {
    let data = need_data!();
    use retort::ingest::dicom::read_file;
    let v = data.join("dicom/valid");
    let (base, _, _) = read_file(&v.join("MR_small.dcm")).unwrap();
    for f in [
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
    ] {
        let (r, _, _) = read_file(&v.join(f)).unwrap();
        assert_eq!((r.c, r.h, r.w), (1, 64, 64), "{f}");
        assert_eq!(r.pixels, base.pixels, "{f} decodes differently");
    }
    let (x, n, _) = read_file(&v.join("chest_xray_RG1_UNCR.dcm")).unwrap();
    assert!(n.inverted);
    assert_eq!((x.h, x.w), (1955, 1841));
    let (_, n, _) = read_file(&v.join("rtdose.dcm")).unwrap();
    assert!(n.frames > 1);
    for f in [
        "MR_truncated.dcm",
        "no_meta.dcm",
        "meta_missing_tsyntax.dcm",
        "badVR.dcm",
    ] {
        match read_file(&data.join("dicom/edge").join(f)) {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains(f), "{e}"),
        }
    }
}

/// Colour objects are refused by the burned-in rule (secondary capture); with the flag set to
/// NO in memory, their colour paths (RGB, palette, JPEG 2000) decode to 3 channels.
#[test]
fn colour_dicom_decodes_when_not_burned_in() {
    use dicom_core::{value::PrimitiveValue, VR};
    use dicom_object::mem::InMemElement;
    let data = need_data!();
    let v = data.join("dicom/valid");
    for f in [
        "examples_rgb_color.dcm",
        "examples_palette.dcm",
        "JPEG2000.dcm",
    ] {
        let p = v.join(f);
        let e = retort::ingest::dicom::read_file(&p).unwrap_err();
        assert_eq!(e.code_str(), "ingest-dicom-burned-in", "{f}: {e}");
        let mut obj = dicom_object::open_file(&p).unwrap();
        obj.put(InMemElement::new(
            dicom_dictionary_std::tags::BURNED_IN_ANNOTATION,
            VR::CS,
            PrimitiveValue::from("NO"),
        ));
        let (raw, notes, _) = retort::ingest::dicom::decode_object(&p, &obj).unwrap();
        let plane = raw.h * raw.w;
        if f != "JPEG2000.dcm" {
            assert_eq!(raw.c, 3, "{f}");
            // Real colour: the channels differ somewhere.
            let differs = (0..plane).any(|i| raw.pixels[i] != raw.pixels[plane + i]);
            assert!(differs, "{f} decoded as gray");
        }
        assert_eq!(f == "examples_palette.dcm", notes.palette, "{f}");
        let distinct: std::collections::BTreeSet<u8> = raw.pixels.iter().copied().collect();
        assert!(distinct.len() > 16, "{f} is flat");
    }
    // The JPEG one does not parse with this dicom-object version: refused with a reason.
    let e = retort::ingest::dicom::read_file(&v.join("SC_rgb_jpeg.dcm"));
    if let Err(e) = e {
        assert!(e.to_string().contains("SC_rgb_jpeg.dcm"));
    }
}

#[test]
fn crafted_dicom_window_inversion_and_refusals() {
    use retort::ingest::dicom::read_file;
    let d = tempfile::tempdir().unwrap();
    let px: Vec<u8> = vec![0, 50, 100, 200];
    // Window c=100 w=101 (PS3.3 C.11.2.1.2.1): x <= 49.5 → 0; x > 149.5 → 1; else
    // (x - 99.5) / 100 + 0.5.
    let windowed = dcm::file(&dcm::Spec {
        window: Some(("100", "101")),
        ..spec("MONOCHROME2", &px)
    });
    let p = d.path().join("w.dcm");
    std::fs::write(&p, windowed).unwrap();
    let (r, n, inv) = read_file(&p).unwrap();
    assert!(n.windowed && !n.inverted);
    assert_eq!(r.pixels, vec![0, 1, 129, 255]);
    assert!(inv.identifying >= 4);
    let p1 = d.path().join("m1.dcm");
    std::fs::write(&p1, dcm::simple("MONOCHROME1", &px, 2, 2)).unwrap();
    let (r, n, _) = read_file(&p1).unwrap();
    assert!(n.inverted);
    assert_eq!(r.pixels, vec![255, 191, 128, 0]);

    let refused = |s: dcm::Spec, code: &str, words: &str| {
        let p = d.path().join(format!("{code}.dcm"));
        std::fs::write(&p, dcm::file(&s)).unwrap();
        let e = read_file(&p).unwrap_err();
        assert_eq!(e.code_str(), code);
        assert!(
            e.to_string().contains(words) && e.to_string().contains(".dcm"),
            "{e}"
        );
    };
    refused(
        dcm::Spec {
            burned_in: Some("YES"),
            ..spec("MONOCHROME2", &px)
        },
        "ingest-dicom-burned-in",
        "Burned In Annotation",
    );
    refused(
        dcm::Spec {
            sop_class: "1.2.840.10008.5.1.4.1.1.7",
            ..spec("MONOCHROME2", &px)
        },
        "ingest-dicom-burned-in",
        "secondary capture",
    );
    refused(
        dcm::Spec {
            ts: "1.2.840.10008.1.2.4.80",
            encapsulated: true,
            ..spec("MONOCHROME2", &px)
        },
        "ingest-dicom-transfer-syntax",
        "JPEG-LS",
    );
    refused(
        dcm::Spec {
            ts: "1.2.840.10008.1.2.4.51",
            encapsulated: true,
            ..spec("MONOCHROME2", &px)
        },
        "ingest-dicom-transfer-syntax",
        "12-bit",
    );
    refused(
        dcm::Spec {
            pixels: &px[..2],
            ..spec("MONOCHROME2", &px)
        },
        "ingest-dicom-pixel-data",
        "",
    );
    // Secondary capture explicitly marked NO is read.
    let p = d.path().join("sc-no.dcm");
    std::fs::write(
        &p,
        dcm::file(&dcm::Spec {
            sop_class: "1.2.840.10008.5.1.4.1.1.7",
            burned_in: Some("NO"),
            ..spec("MONOCHROME2", &px)
        }),
    )
    .unwrap();
    assert!(read_file(&p).is_ok());
}

fn spec<'a>(pi: &'a str, px: &'a [u8]) -> dcm::Spec<'a> {
    dcm::Spec {
        ts: dcm::EXPLICIT_LE,
        sop_class: dcm::CT,
        photometric: pi,
        burned_in: None,
        recognizable: None,
        h: 2,
        w: 2,
        pixels: px,
        window: None,
        encapsulated: false,
    }
}

#[test]
fn dicom_labels_csv_and_golden_refusals() {
    let t = TestWs::init();
    let src = t.path("flat");
    std::fs::create_dir_all(&src).unwrap();
    let px: Vec<u8> = (0..16).collect();
    for i in 0..4 {
        std::fs::write(
            src.join(format!("{i}.dcm")),
            dcm::simple("MONOCHROME2", &px, 4, 4),
        )
        .unwrap();
    }
    let csv = t.path("labels.csv");
    std::fs::write(&csv, "file,label\n0.dcm,a\n1.dcm,a\n2.dcm,b\n3.dcm,b\n").unwrap();
    t.run(&[
        "ingest",
        src.to_str().unwrap(),
        "--name",
        "flat",
        "--format",
        "dicom",
        "--labels",
        csv.to_str().unwrap(),
    ])
    .expect(0);
    // A burned-in file fails the ingest, naming the file and the fix.
    std::fs::write(
        src.join("4.dcm"),
        dcm::file(&dcm::Spec {
            burned_in: Some("YES"),
            ..spec("MONOCHROME2", &px[..4])
        }),
    )
    .unwrap();
    std::fs::write(&csv, "file,label\n0.dcm,a\n1.dcm,a\n2.dcm,b\n4.dcm,b\n").unwrap();
    let r = t.run(&[
        "ingest",
        src.to_str().unwrap(),
        "--name",
        "flat2",
        "--format",
        "dicom",
        "--labels",
        csv.to_str().unwrap(),
    ]);
    r.expect(1)
        .stderr_has(&["4.dcm", "Burned In Annotation", "hint: ", "--skip-invalid"]);
    assert!(!t.ws.join("datasets/flat2").exists());
    assert_eq!(last_record(&t)["reason"], "ingest-dicom-burned-in");
    // A bad CSV line names the file and the line.
    std::fs::write(&csv, "0.dcm,a\nmissing.dcm,b\n").unwrap();
    t.run(&[
        "ingest",
        src.to_str().unwrap(),
        "--name",
        "flat3",
        "--format",
        "dicom",
        "--labels",
        csv.to_str().unwrap(),
    ])
    .expect(1)
    .stderr_has(&["labels.csv:2:", "missing.dcm", "hint: "]);
}

/// The SOP classes whose objects often carry burned-in text (PS3.6 UIDs, listed here
/// independently of the library's table): one crafted file per class is refused unless Burned
/// In Annotation (0028,0301) says NO. The classes that photograph the patient also need
/// Recognizable Visual Features (0028,0302) = NO.
#[test]
fn dicom_burned_in_risk_classes_are_refused_one_file_per_class() {
    use retort::ingest::dicom::read_file;
    const BURNED_IN: &[(&str, &str)] = &[
        (
            "1.2.840.10008.5.1.4.1.1.7",
            "Secondary Capture Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.7.1",
            "Multi-frame Single Bit Secondary Capture",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.7.2",
            "Multi-frame Grayscale Byte Secondary Capture",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.7.3",
            "Multi-frame Grayscale Word Secondary Capture",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.7.4",
            "Multi-frame True Color Secondary Capture",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.6",
            "Ultrasound Image Storage (Retired)",
        ),
        ("1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound Image Storage"),
        (
            "1.2.840.10008.5.1.4.1.1.3",
            "Ultrasound Multi-frame Image Storage (Retired)",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.3.1",
            "Ultrasound Multi-frame Image Storage",
        ),
        ("1.2.840.10008.5.1.4.1.1.6.2", "Enhanced US Volume Storage"),
        ("1.2.840.10008.5.1.4.1.1.6.3", "Photoacoustic Image Storage"),
        (
            "1.2.840.10008.5.1.4.1.1.77.1",
            "VL Image Storage - Trial (Retired)",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.2",
            "VL Multi-frame Image Storage - Trial (Retired)",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.1",
            "VL Endoscopic Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.1.1",
            "Video Endoscopic Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.2",
            "VL Microscopic Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.2.1",
            "Video Microscopic Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.3",
            "VL Slide-Coordinates Microscopic Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.6",
            "VL Whole Slide Microscopy Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.8",
            "Confocal Microscopy Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.9",
            "Confocal Microscopy Tiled Pyramidal Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.4",
            "VL Photographic Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.4.1",
            "Video Photographic Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.7",
            "Dermoscopic Photography Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.5.1",
            "Ophthalmic Photography 8 Bit Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.5.2",
            "Ophthalmic Photography 16 Bit Image Storage",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.5.5",
            "Wide Field Ophthalmic Photography Stereographic",
        ),
        (
            "1.2.840.10008.5.1.4.1.1.77.1.5.6",
            "Wide Field Ophthalmic Photography 3D Coordinates",
        ),
    ];
    // Photographs of the patient's body surface: need both flags.
    const PHOTOGRAPHS: &[&str] = &[
        "1.2.840.10008.5.1.4.1.1.77.1",
        "1.2.840.10008.5.1.4.1.1.77.2",
        "1.2.840.10008.5.1.4.1.1.77.1.4",
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",
        "1.2.840.10008.5.1.4.1.1.77.1.7",
    ];
    let d = tempfile::tempdir().unwrap();
    let px: Vec<u8> = vec![0, 50, 100, 200];
    let write = |name: &str, s: dcm::Spec| {
        let p = d.path().join(name);
        std::fs::write(&p, dcm::file(&s)).unwrap();
        p
    };
    for (i, (uid, name)) in BURNED_IN.iter().enumerate() {
        let p = write(
            &format!("class-{i}.dcm"),
            dcm::Spec {
                sop_class: uid,
                ..spec("MONOCHROME2", &px)
            },
        );
        let e = read_file(&p).expect_err(uid);
        assert_eq!(e.code_str(), "ingest-dicom-burned-in", "{uid}: {e}");
        let msg = e.to_string();
        for part in [*name, *uid, "(0028,0301)", "does not say NO", "class-"] {
            assert!(msg.contains(part), "{uid}: {msg:?} lacks {part:?}");
        }
        let hint = retort::error::Coded::hint(&e).unwrap();
        assert!(hint.contains("de-identified export"), "{hint}");
        // Audit text: fixed, no file name, no class detail that could vary.
        assert!(!e.what().contains("class-"), "{}", e.what());
        // Flagged NO: read, unless it photographs the patient and says nothing about it.
        let p = write(
            &format!("class-{i}-no.dcm"),
            dcm::Spec {
                sop_class: uid,
                burned_in: Some("NO"),
                ..spec("MONOCHROME2", &px)
            },
        );
        if PHOTOGRAPHS.contains(uid) {
            let e = read_file(&p).expect_err(uid);
            assert_eq!(
                e.code_str(),
                "ingest-dicom-recognizable-features",
                "{uid}: {e}"
            );
            assert!(e.to_string().contains(name) && e.to_string().contains("(0028,0302)"));
            let p = write(
                &format!("class-{i}-no-no.dcm"),
                dcm::Spec {
                    sop_class: uid,
                    burned_in: Some("NO"),
                    recognizable: Some("NO"),
                    ..spec("MONOCHROME2", &px)
                },
            );
            read_file(&p).unwrap_or_else(|e| panic!("{uid} flagged NO twice: {e}"));
        } else {
            read_file(&p).unwrap_or_else(|e| panic!("{uid} flagged NO: {e}"));
        }
    }
    // Acquisition classes rely on the flags alone: CT, MR, digital X-ray without flags are read.
    for uid in [
        dcm::CT,
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.77.1.5.4",
    ] {
        let p = write(
            "acq.dcm",
            dcm::Spec {
                sop_class: uid,
                ..spec("MONOCHROME2", &px)
            },
        );
        read_file(&p).unwrap_or_else(|e| panic!("{uid}: {e}"));
    }
}

/// Recognizable Visual Features (0028,0302) = YES (a head scan with the face, a photograph) is
/// refused like burned-in annotation, naming the attribute and the fix, through the library and
/// the CLI; the audit record carries the reason and no file name. NO, or no flag on an
/// acquisition class, is read.
#[test]
fn dicom_recognizable_visual_features_yes_is_refused() {
    use retort::ingest::dicom::read_file;
    let px: Vec<u8> = (0..16).collect();
    let d = tempfile::tempdir().unwrap();
    for (flag, refused) in [
        (Some("YES"), true),
        (Some("yes "), true),
        (Some("NO"), false),
        (None, false),
    ] {
        let p = d.path().join("face.dcm");
        std::fs::write(
            &p,
            dcm::file(&dcm::Spec {
                recognizable: flag,
                burned_in: Some("NO"),
                ..spec("MONOCHROME2", &px[..4])
            }),
        )
        .unwrap();
        match read_file(&p) {
            Err(e) if refused => {
                assert_eq!(e.code_str(), "ingest-dicom-recognizable-features");
                let m = e.to_string();
                assert!(
                    m.contains("face.dcm")
                        && m.contains("Recognizable Visual Features (0028,0302) is YES"),
                    "{m}"
                );
                let hint = retort::error::Coded::hint(&e).unwrap();
                assert!(
                    hint.contains("de-identified export") && hint.contains("(0028,0302)"),
                    "{hint}"
                );
            }
            Ok(_) if !refused => {}
            other => panic!("flag {flag:?}: {:?}", other.map(|_| ())),
        }
    }

    // Through the CLI, with a file name that holds a patient name.
    let t = TestWs::init();
    let src = t.path("faces");
    for (class, n) in [("a", 2), ("b", 2)] {
        std::fs::create_dir_all(src.join(class)).unwrap();
        for i in 0..n {
            std::fs::write(
                src.join(class).join(format!("{i}.dcm")),
                dcm::simple("MONOCHROME2", &px, 4, 4),
            )
            .unwrap();
        }
    }
    std::fs::write(
        src.join("b").join("DOE_JANE_head.dcm"),
        dcm::file(&dcm::Spec {
            recognizable: Some("YES"),
            h: 4,
            w: 4,
            ..spec("MONOCHROME2", &px)
        }),
    )
    .unwrap();
    let r = t.run(&[
        "ingest",
        src.to_str().unwrap(),
        "--name",
        "heads",
        "--format",
        "dicom",
    ]);
    r.expect(1).stderr_has(&[
        "DOE_JANE_head.dcm",
        "Recognizable Visual Features (0028,0302)",
        "hint: ",
        "de-identified export",
        "--skip-invalid",
    ]);
    assert!(!t.ws.join("datasets/heads").exists());
    let rec = last_record(&t);
    assert_eq!(rec["reason"], "ingest-dicom-recognizable-features");
    let text = rec.to_string();
    assert!(!text.contains("DOE_JANE"), "file name in the audit: {text}");
    // Left out with --skip-invalid, the rest is ingested.
    t.run(&[
        "ingest",
        src.to_str().unwrap(),
        "--name",
        "heads",
        "--format",
        "dicom",
        "--skip-invalid",
    ])
    .expect(0);
    let text = t.audit_records().last().unwrap().to_string();
    assert!(!text.contains("DOE_JANE"), "file name in the audit: {text}");
}

// ---------------------------------------------------------------- images, parquet

#[test]
fn png_folder_channels_sizes_and_skip_invalid() {
    let t = TestWs::init();
    let src = t.path("pngs");
    png_folder(&src, &[("cat", 3, 8, 8, 5), ("dog", 1, 8, 8, 5)]);
    let s = src.to_str().unwrap();
    // Mixed channels: error unless --channels.
    t.run(&["ingest", s, "--name", "p"])
        .expect(1)
        .stderr_has(&["channel", "--channels", ".png"]);
    no_dataset_left(&t);
    let r = t.run(&["--json", "ingest", s, "--name", "p", "--channels", "3"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["shape"], serde_json::json!([3, 8, 8]));
    assert_eq!(j["classes"], serde_json::json!(["cat", "dog"]));
    assert_eq!(
        j["train_count"].as_u64().unwrap() + j["test_count"].as_u64().unwrap(),
        10
    );
    assert_eq!(j["per_class_test"], serde_json::json!([1, 1]));
    assert_eq!(j["split"]["kind"], "random");
    // Mixed sizes: error unless --size.
    png_folder(&src, &[("dog", 1, 12, 10, 1)]);
    t.run(&["ingest", s, "--name", "q", "--channels", "1"])
        .expect(1)
        .stderr_has(&["--size", "12x10"]);
    t.run(&[
        "ingest",
        s,
        "--name",
        "q",
        "--channels",
        "1",
        "--size",
        "6x6",
    ])
    .expect(0);
    let q =
        retort::dataset::open(&retort::workspace::Workspace::open(&t.ws).unwrap(), "q").unwrap();
    assert_eq!(q.meta.shape.to_vec(), vec![1, 6, 6]);
    assert!(q.meta.notes.iter().any(|n| n.contains("triangle")));
    // A corrupt file: error naming it; with --skip-invalid it is listed.
    std::fs::write(src.join("cat/broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    t.run(&[
        "ingest",
        s,
        "--name",
        "r",
        "--channels",
        "1",
        "--size",
        "6x6",
    ])
    .expect(1)
    .stderr_has(&["broken.png", "hint: "]);
    let r = t.run(&[
        "ingest",
        s,
        "--name",
        "r",
        "--channels",
        "1",
        "--size",
        "6x6",
        "--skip-invalid",
    ]);
    r.expect(0)
        .stdout_has(&["broken.png", "ingest-image-invalid"]);
}

#[test]
fn parquet_round_trip_of_a_synthetic_table() {
    let t = TestWs::init();
    let shape = retort::dataset::Shape { c: 1, h: 3, w: 2 };
    let mut set = retort::dataset::FloatImages::new(shape);
    for i in 0..20u32 {
        let v: Vec<f32> = (0..6).map(|k| ((i * 6 + k) % 256) as f32 / 255.0).collect();
        set.push(&v, i % 2);
    }
    let classes = vec!["benign".to_string(), "malignant".to_string()];
    let p = t.path("synthetic.parquet");
    retort::dataset::write_synthetic_parquet(&p, &set, &classes).unwrap();
    let r = t.run(&["--json", "ingest", p.to_str().unwrap(), "--name", "syn"]);
    r.expect(0);
    assert_eq!(r.json()["format"], "parquet");
    assert_eq!(r.json()["classes"], serde_json::json!(classes));
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    let st = retort::dataset::open(&ws, "syn").unwrap();
    let mut got: Vec<(u32, Vec<u8>)> = Vec::new();
    for split in [retort::dataset::Split::Train, retort::dataset::Split::Test] {
        let im = st.load(split).unwrap();
        for i in 0..im.len() {
            got.push((im.labels[i], im.image(i).to_vec()));
        }
    }
    let u8s = set.to_u8();
    let mut want: Vec<(u32, Vec<u8>)> = (0..u8s.len())
        .map(|i| (u8s.labels[i], u8s.image(i).to_vec()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn parquet_with_png_bytes_and_string_labels() {
    use arrow_array::{BinaryArray, RecordBatch, StringArray};
    use std::sync::Arc;
    let t = TestWs::init();
    let pngs: Vec<Vec<u8>> = (0..6).map(|i| png_bytes(1, 4, 4, i * 30)).collect();
    let labels = StringArray::from(vec!["x", "y", "x", "y", "x", "y"]);
    let images = BinaryArray::from_iter_values(pngs.iter());
    let batch = RecordBatch::try_from_iter(vec![
        ("label", Arc::new(labels) as arrow_array::ArrayRef),
        ("image", Arc::new(images) as arrow_array::ArrayRef),
    ])
    .unwrap();
    let p = t.path("t.parquet");
    let f = std::fs::File::create(&p).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let r = t.run(&["--json", "ingest", p.to_str().unwrap(), "--name", "tb"]);
    r.expect(0);
    assert_eq!(r.json()["classes"], serde_json::json!(["x", "y"]));
    assert_eq!(r.json()["shape"], serde_json::json!([1, 4, 4]));
    // A table without an image column is refused with the columns it has.
    let bad = RecordBatch::try_from_iter(vec![(
        "label",
        Arc::new(StringArray::from(vec!["x"])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let p2 = t.path("bad.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&p2).unwrap(),
        bad.schema(),
        None,
    )
    .unwrap();
    w.write(&bad).unwrap();
    w.close().unwrap();
    t.run(&["ingest", p2.to_str().unwrap(), "--name", "tb2"])
        .expect(1)
        .stderr_has(&["bad.parquet", "no `image` column", "hint: "]);
}

// ---------------------------------------------------------------- golden errors

/// Run an ingest that must fail: exit code, code, the file named, a hint, nothing stored,
/// an audited error without the path.
#[track_caller]
fn golden(t: &TestWs, args: &[&str], exit: i32, code: &str, names: &str) {
    let mut a = vec!["--json", "ingest"];
    a.extend_from_slice(args);
    let r = t.run(&a);
    r.expect(exit);
    r.stderr_has(&["error: ", "hint: ", names]);
    assert_eq!(r.json()["error"]["code"], code, "{}", r.stderr);
    no_dataset_left(t);
    if exit != 2 {
        let rec = last_record(t);
        assert_eq!(rec["action"], "dataset.ingest");
        assert_eq!(rec["outcome"], "error");
        assert_eq!(rec["reason"], code);
    }
}

#[test]
fn golden_errors_for_bad_inputs() {
    let t = TestWs::init();
    let p = |s: &str| t.path(s).to_str().unwrap().to_string();
    // Missing source.
    golden(
        &t,
        &[&p("nowhere"), "--name", "x"],
        1,
        "ingest-source-missing",
        "nowhere",
    );
    // IDX: wrong magic, truncated, count mismatch, unpaired.
    let idx = t.path("idx");
    std::fs::create_dir_all(&idx).unwrap();
    let imgs = idx_file(&[3, 2, 2], &[1; 12]);
    let labs = idx_file(&[3], &[0, 1, 1]);
    std::fs::write(idx.join("train-images-idx3-ubyte"), &imgs).unwrap();
    std::fs::write(idx.join("train-labels-idx1-ubyte"), &labs).unwrap();
    t.run(&["ingest", &p("idx"), "--name", "okidx", "--format", "idx"])
        .expect(0);
    std::fs::remove_dir_all(t.ws.join("datasets/okidx")).unwrap();
    // A stray label (255 among 0..1) is out of range, not a missing class. See: issue 20
    std::fs::write(
        idx.join("train-labels-idx1-ubyte"),
        idx_file(&[3], &[0, 1, 255]),
    )
    .unwrap();
    golden(
        &t,
        &[&p("idx"), "--name", "x", "--format", "idx"],
        1,
        "ingest-label-out-of-range",
        "train-labels-idx1-ubyte: label 255 of record 2 is out of range: there are 2 classes (labels 0 to 1)",
    );
    golden(
        &t,
        &[&p("idx"), "--name", "x", "--class-names", "a,b"],
        1,
        "ingest-label-out-of-range",
        "label 255 of record 2",
    );
    std::fs::write(idx.join("train-labels-idx1-ubyte"), &labs).unwrap();
    let mut bad = imgs.clone();
    bad[2] = 9;
    std::fs::write(idx.join("train-images-idx3-ubyte"), &bad).unwrap();
    golden(
        &t,
        &[&p("idx"), "--name", "x", "--format", "idx"],
        1,
        "ingest-idx-invalid",
        "train-images-idx3-ubyte",
    );
    std::fs::write(idx.join("train-images-idx3-ubyte"), &imgs[..imgs.len() - 3]).unwrap();
    golden(
        &t,
        &[&p("idx"), "--name", "x"],
        1,
        "ingest-idx-invalid",
        "truncated",
    );
    std::fs::write(idx.join("train-images-idx3-ubyte"), &imgs).unwrap();
    std::fs::write(idx.join("train-labels-idx1-ubyte"), idx_file(&[2], &[0, 1])).unwrap();
    golden(
        &t,
        &[&p("idx"), "--name", "x"],
        1,
        "ingest-idx-count-mismatch",
        "train-labels-idx1-ubyte",
    );
    std::fs::write(idx.join("train-labels-idx1-ubyte"), &labs).unwrap();
    std::fs::write(idx.join("t10k-images-idx3-ubyte"), &imgs).unwrap();
    golden(
        &t,
        &[&p("idx"), "--name", "x"],
        1,
        "ingest-idx-pairs",
        "t10k-images-idx3-ubyte",
    );
    // gzip that is damaged.
    std::fs::write(
        idx.join("t10k-labels-idx1-ubyte.gz"),
        [0x1f, 0x8b, 8, 0, 1, 2, 3],
    )
    .unwrap();
    golden(
        &t,
        &[&p("idx"), "--name", "x"],
        1,
        "ingest-idx-invalid",
        "t10k-labels-idx1-ubyte.gz",
    );
    // Image folders: an empty class, one class, no images.
    let f = t.path("folders");
    png_folder(&f, &[("a", 1, 4, 4, 3)]);
    golden(
        &t,
        &[&p("folders"), "--name", "x", "--format", "images"],
        1,
        "ingest-one-class",
        "folders",
    );
    std::fs::create_dir_all(f.join("b")).unwrap();
    golden(
        &t,
        &[&p("folders"), "--name", "x", "--format", "images"],
        1,
        "ingest-empty-class",
        "\"b\"",
    );
    let e = t.path("empty");
    std::fs::create_dir_all(e.join("a")).unwrap();
    std::fs::create_dir_all(e.join("b")).unwrap();
    // Folders without a file: the source is empty (not "no images of this format").
    // See: issue 20
    golden(
        &t,
        &[&p("empty"), "--name", "x", "--format", "images"],
        1,
        "ingest-source-empty",
        "the folder is empty",
    );
    golden(
        &t,
        &[&p("empty"), "--name", "x"],
        1,
        "ingest-source-empty",
        "hint: put the data in the folder first",
    );
    // Unreadable directory (not testable as root, who reads everything).
    let u = t.path("unreadable");
    png_folder(&u, &[("a", 1, 4, 4, 2), ("b", 1, 4, 4, 2)]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(u.join("a"), std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(u.join("a")).is_err() {
        golden(
            &t,
            &[&p("unreadable"), "--name", "x", "--format", "images"],
            1,
            "ingest-unreadable",
            "unreadable/a",
        );
    } else {
        eprintln!("SKIPPED: unreadable-directory case (running as root)");
    }
    std::fs::set_permissions(u.join("a"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Unknown format.
    std::fs::write(t.path("notes.txt"), "hello").unwrap();
    golden(
        &t,
        &[&p("notes.txt"), "--name", "x"],
        1,
        "ingest-format-unknown",
        "notes.txt",
    );
    // Options out of range: usage (exit 2).
    golden(
        &t,
        &[&p("folders"), "--name", "x", "--test-fraction", "1.5"],
        2,
        "ingest-option-invalid",
        "--test-fraction",
    );
    // An official split and --test-fraction do not mix.
    let t2 = TestWs::init();
    let idx2 = t2.path("idx");
    std::fs::create_dir_all(&idx2).unwrap();
    for set in ["train", "t10k"] {
        std::fs::write(idx2.join(format!("{set}-images-idx3-ubyte")), &imgs).unwrap();
        std::fs::write(idx2.join(format!("{set}-labels-idx1-ubyte")), &labs).unwrap();
    }
    golden(
        &t2,
        &[
            idx2.to_str().unwrap(),
            "--name",
            "x",
            "--test-fraction",
            "0.5",
        ],
        1,
        "ingest-option-not-applicable",
        "official",
    );
    // Bad name (wrong in itself: usage) and an existing name. See: issue 20
    t2.run(&["ingest", idx2.to_str().unwrap(), "--name", "../evil"])
        .expect(2)
        .stderr_has(&["../evil", "hint: "]);
    t2.run(&["ingest", idx2.to_str().unwrap(), "--name", "ok"])
        .expect(0);
    t2.run(&["ingest", idx2.to_str().unwrap(), "--name", "ok"])
        .expect(1)
        .stderr_has(&["already exists", "hint: "]);
    let j = t2.run(&["--json", "datasets", "show", "ok"]).json();
    assert_eq!(j["train_count"], 3);
    assert_eq!(j["test_count"], 3);
    t2.run(&["datasets", "show", "nope"])
        .expect(1)
        .stderr_has(&["nope", "hint: "]);
}

#[test]
fn a_concurrent_ingest_waits_then_fails_with_workspace_locked() {
    let t = TestWs::init();
    let src = t.path("pngs");
    png_folder(&src, &[("a", 1, 4, 4, 2), ("b", 1, 4, 4, 2)]);
    let ws = retort::workspace::Workspace::open(&t.ws).unwrap();
    let lock = ws.lock(std::time::Duration::from_secs(1)).unwrap();
    let t0 = std::time::Instant::now();
    let r = t.run(&["--json", "ingest", src.to_str().unwrap(), "--name", "x"]);
    let waited = t0.elapsed();
    r.expect(1).stderr_has(&["locked", "hint: "]);
    assert_eq!(r.json()["error"]["code"], "workspace-locked");
    assert!(
        waited >= std::time::Duration::from_secs(4),
        "did not wait: {waited:?}"
    );
    no_dataset_left(&t);
    drop(lock);
    t.run(&["ingest", src.to_str().unwrap(), "--name", "x"])
        .expect(0);
}
