use super::*;

/// Insert a PNG `tEXt` chunk after IHDR (to prove metadata does not survive decoding).
pub(crate) fn with_text_chunk(png: &[u8], key: &str, value: &str) -> Vec<u8> {
    let ihdr_end = 8 + 4 + 4 + 13 + 4;
    let mut body = b"tEXt".to_vec();
    body.extend_from_slice(key.as_bytes());
    body.push(0);
    body.extend_from_slice(value.as_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    let mut out = png[..ihdr_end].to_vec();
    out.extend_from_slice(&((body.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out.extend_from_slice(&png[ihdr_end..]);
    out
}

#[test]
fn random_split_is_stratified_and_a_partition() {
    let labels: Vec<u32> = (0..103).map(|i| (i % 3) as u32).chain([3, 4, 4]).collect();
    let (tr, te) = random_split(&labels, 5, 0.2);
    let mut all: Vec<usize> = tr.iter().chain(te.iter()).copied().collect();
    all.sort();
    assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
    let test_per: Vec<usize> = (0..5)
        .map(|c| te.iter().filter(|&&i| labels[i] == c).count())
        .collect();
    // 35/34/34 images → 7/7/7 held out; a single image stays in train; 2 → 1 held out.
    assert_eq!(test_per, vec![7, 7, 7, 0, 1]);
    // Two draws differ (OS-keyed permutation), with overwhelming probability.
    let (_, te2) = random_split(&labels, 5, 0.2);
    let (_, te3) = random_split(&labels, 5, 0.2);
    assert!(te != te2 || te2 != te3);
}

#[test]
fn normalize_converts_channels_and_resizes() {
    let rgb = Raw {
        c: 3,
        h: 1,
        w: 2,
        pixels: vec![255, 0, 0, 255, 0, 0],
    };
    let g = rgb.clone().normalize(1, (1, 2));
    assert_eq!(g.pixels, vec![76, 150]);
    let big = g.normalize(3, (4, 6));
    assert_eq!((big.c, big.h, big.w, big.pixels.len()), (3, 4, 6, 72));
}

#[test]
fn detect_by_content() {
    let d = tempfile::tempdir().unwrap();
    let idx = d.path().join("idx");
    std::fs::create_dir(&idx).unwrap();
    std::fs::write(idx.join("train-images-idx3-ubyte"), [0, 0, 8, 3]).unwrap();
    assert_eq!(detect(&idx).unwrap(), Format::Idx);
    let imgs = d.path().join("imgs/cat");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::write(imgs.join("a.png"), b"x").unwrap();
    assert_eq!(detect(&d.path().join("imgs")).unwrap(), Format::Images);
    let pq = d.path().join("t.parquet");
    std::fs::write(&pq, b"PAR1....").unwrap();
    assert_eq!(detect(&pq).unwrap(), Format::Parquet);
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(detect(&empty), Err(Error::UnknownFormat { .. })));
}

#[test]
fn codes_are_declared() {
    let errs = [
        Error::SourceMissing {
            path: "/s/DOE^JANE.dcm".into(),
        },
        Error::Dicom {
            path: "/s/DOE^JANE.dcm".into(),
            refusal: error::Refusal::BurnedIn,
            what: "y".into(),
        },
        Error::Labels {
            path: "x".into(),
            line: 3,
            what: "y".into(),
        },
    ];
    for e in &errs {
        assert!(Error::CODES.contains(&e.code_str()), "{}", e.code_str());
        assert!(crate::error::Coded::hint(e).is_some());
        assert!(!e.what().contains("DOE"), "{}", e.what());
    }
    assert_eq!(errs[2].to_string(), "x:3: y");
}
