//! Milvus 1.x domain enums that travel as plain integers on the wire and in
//! the metadata database: metric types, engine (index) types, file types.

use std::fmt;

/// Distance metric of a collection (`CollectionSchema.metric_type`, `Tables.metric_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    L2 = 1,
    Ip = 2,
    Hamming = 3,
    Jaccard = 4,
    Tanimoto = 5,
    Substructure = 6,
    Superstructure = 7,
}

impl MetricType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            1 => Self::L2,
            2 => Self::Ip,
            3 => Self::Hamming,
            4 => Self::Jaccard,
            5 => Self::Tanimoto,
            6 => Self::Substructure,
            7 => Self::Superstructure,
            _ => return None,
        })
    }

    /// Binary metrics take `binary_data` vectors of `dim / 8` bytes.
    pub fn is_binary(self) -> bool {
        !matches!(self, Self::L2 | Self::Ip)
    }

    /// Sort order of hits: inner product is a similarity (larger is better),
    /// every other metric is a distance (smaller is better).
    pub fn order(self) -> Order {
        match self {
            Self::Ip => Order::Descending,
            _ => Order::Ascending,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::L2 => "L2",
            Self::Ip => "IP",
            Self::Hamming => "HAMMING",
            Self::Jaccard => "JACCARD",
            Self::Tanimoto => "TANIMOTO",
            Self::Substructure => "SUBSTRUCTURE",
            Self::Superstructure => "SUPERSTRUCTURE",
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Order in which hits of one query are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smaller distance first (L2 and the binary metrics).
    Ascending,
    /// Larger score first (IP).
    Descending,
}

impl Order {
    /// The padding distance Milvus puts next to an id of -1: it ranks last.
    pub fn worst(self) -> f32 {
        match self {
            Order::Ascending => f32::MAX,
            Order::Descending => -f32::MAX,
        }
    }

    /// True when distance `a` ranks strictly before `b`.
    pub fn better(self, a: f32, b: f32) -> bool {
        match self {
            Order::Ascending => a < b,
            Order::Descending => a > b,
        }
    }
}

/// Server `EngineType`: the index type of a collection or a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineType {
    Flat = 1,
    IvfFlat = 2,
    IvfSq8 = 3,
    Rnsg = 4,
    IvfSq8h = 5,
    IvfPq = 6,
    SptagKdt = 7,
    SptagBkt = 8,
    BinFlat = 9,
    BinIvfFlat = 10,
    Hnsw = 11,
    Annoy = 12,
}

impl EngineType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            1 => Self::Flat,
            2 => Self::IvfFlat,
            3 => Self::IvfSq8,
            4 => Self::Rnsg,
            5 => Self::IvfSq8h,
            6 => Self::IvfPq,
            7 => Self::SptagKdt,
            8 => Self::SptagBkt,
            9 => Self::BinFlat,
            10 => Self::BinIvfFlat,
            11 => Self::Hnsw,
            12 => Self::Annoy,
            _ => return None,
        })
    }

    /// The type reported to clients: binary engines are shown as their float twins.
    pub fn reported(self) -> Self {
        match self {
            Self::BinFlat => Self::Flat,
            Self::BinIvfFlat => Self::IvfFlat,
            other => other,
        }
    }

    /// The name ShowCollectionInfo puts in `index_name`.
    pub fn index_name(self) -> &'static str {
        match self {
            Self::Flat | Self::BinFlat => "IDMAP",
            Self::IvfFlat | Self::BinIvfFlat => "IVFFLAT",
            Self::IvfSq8 => "IVFSQ8",
            Self::Rnsg => "NSG",
            Self::IvfSq8h => "IVFSQ8H",
            Self::IvfPq => "PQ",
            Self::SptagKdt => "KDT",
            Self::SptagBkt => "BKT",
            Self::Hnsw => "HNSW",
            Self::Annoy => "ANNOY",
        }
    }
}

/// `TableFiles.file_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    New = 0,
    Raw = 1,
    ToIndex = 2,
    Index = 3,
    ToDelete = 4,
    NewMerge = 5,
    NewIndex = 6,
    Backup = 7,
}

impl FileType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::New,
            1 => Self::Raw,
            2 => Self::ToIndex,
            3 => Self::Index,
            4 => Self::ToDelete,
            5 => Self::NewMerge,
            6 => Self::NewIndex,
            7 => Self::Backup,
            _ => return None,
        })
    }

    /// Files a search reads: RAW, TO_INDEX and INDEX.
    pub fn is_searchable(self) -> bool {
        matches!(self, Self::Raw | Self::ToIndex | Self::Index)
    }
}

/// `Tables.state`.
pub const TABLE_STATE_NORMAL: i32 = 0;
pub const TABLE_STATE_TO_DELETE: i32 = 1;

/// `Tables.flag` bits: the id mode a collection is locked into by its first insert.
pub const FLAG_AUTO_IDS: i64 = 0x1;
pub const FLAG_USER_IDS: i64 = 0x2;

/// The tag that names a collection's root partition.
pub const DEFAULT_PARTITION_TAG: &str = "_default";
