//! Realistic sample people and companies for the CRM stand-ins' seed knobs.
//!
//! Every value is a pure function of a sequence number, so seeding is deterministic and
//! cheap (no random source, few allocations). Emails and company names are distinct for
//! distinct numbers; other values repeat the way real CRM data does. Domains end in
//! `.example` (RFC 2606), phone numbers use the fictional `555-01xx` range.

#[rustfmt::skip]
const FIRST_NAMES: [(&str, &str); 48] = [
    ("Ada", "ada"), ("Alan", "alan"), ("Grace", "grace"), ("Linus", "linus"),
    ("Margaret", "margaret"), ("Ken", "ken"), ("Barbara", "barbara"), ("Dennis", "dennis"),
    ("Frances", "frances"), ("John", "john"), ("Radia", "radia"), ("Tim", "tim"),
    ("Hedy", "hedy"), ("Edsger", "edsger"), ("Katherine", "katherine"),
    ("Donald", "donald"), ("Sophie", "sophie"), ("Niklaus", "niklaus"), ("Karen", "karen"),
    ("Bjarne", "bjarne"), ("Adele", "adele"), ("Guido", "guido"), ("Shafi", "shafi"),
    ("Leslie", "leslie"), ("Mary", "mary"), ("Vint", "vint"), ("Anita", "anita"),
    ("Robert", "robert"), ("Lynn", "lynn"), ("Yukihiro", "yukihiro"), ("Carol", "carol"),
    ("James", "james"), ("Elena", "elena"), ("Mateo", "mateo"), ("Priya", "priya"),
    ("Omar", "omar"), ("Chloe", "chloe"), ("Lukas", "lukas"), ("Amara", "amara"),
    ("Hiroshi", "hiroshi"), ("Ingrid", "ingrid"), ("Diego", "diego"), ("Fatima", "fatima"),
    ("Noah", "noah"), ("Mei", "mei"), ("Jonas", "jonas"), ("Zara", "zara"),
    ("Luca", "luca"),
];

#[rustfmt::skip]
const LAST_NAMES: [(&str, &str); 48] = [
    ("Lovelace", "lovelace"), ("Turing", "turing"), ("Hopper", "hopper"),
    ("Torvalds", "torvalds"), ("Hamilton", "hamilton"), ("Thompson", "thompson"),
    ("Liskov", "liskov"), ("Ritchie", "ritchie"), ("Allen", "allen"),
    ("McCarthy", "mccarthy"), ("Perlman", "perlman"), ("Berners-Lee", "bernerslee"),
    ("Lamarr", "lamarr"), ("Dijkstra", "dijkstra"), ("Johnson", "johnson"),
    ("Knuth", "knuth"), ("Wilson", "wilson"), ("Wirth", "wirth"), ("Jones", "jones"),
    ("Stroustrup", "stroustrup"), ("Goldberg", "goldberg"), ("van Rossum", "vanrossum"),
    ("Goldwasser", "goldwasser"), ("Lamport", "lamport"), ("Keller", "keller"),
    ("Cerf", "cerf"), ("Borg", "borg"), ("Tarjan", "tarjan"), ("Conway", "conway"),
    ("Matsumoto", "matsumoto"), ("Shaw", "shaw"), ("Gosling", "gosling"),
    ("Garcia", "garcia"), ("Rossi", "rossi"), ("Sharma", "sharma"), ("Haddad", "haddad"),
    ("Martin", "martin"), ("Schmidt", "schmidt"), ("Okafor", "okafor"),
    ("Tanaka", "tanaka"), ("Larsen", "larsen"), ("Fernandez", "fernandez"),
    ("Rahman", "rahman"), ("Brown", "brown"), ("Chen", "chen"), ("Weber", "weber"),
    ("Ali", "ali"), ("Bianchi", "bianchi"),
];

#[rustfmt::skip]
const TITLES: [(&str, &str); 16] = [
    ("Chief Executive Officer", "Executive"), ("Chief Technology Officer", "Engineering"),
    ("VP of Sales", "Sales"), ("Account Executive", "Sales"),
    ("Sales Development Representative", "Sales"), ("Marketing Manager", "Marketing"),
    ("Content Strategist", "Marketing"), ("Software Engineer", "Engineering"),
    ("Engineering Manager", "Engineering"), ("Product Manager", "Product"),
    ("Customer Success Manager", "Customer Success"), ("Support Specialist", "Support"),
    ("Finance Director", "Finance"), ("Controller", "Finance"),
    ("HR Business Partner", "People"), ("Operations Analyst", "Operations"),
];

#[rustfmt::skip]
const PLACES: [(&str, &str, &str); 16] = [
    ("San Francisco", "United States", "+1 415"), ("New York", "United States", "+1 212"),
    ("Austin", "United States", "+1 512"), ("Chicago", "United States", "+1 312"),
    ("Toronto", "Canada", "+1 416"), ("London", "United Kingdom", "+44 20"),
    ("Manchester", "United Kingdom", "+44 161"), ("Berlin", "Germany", "+49 30"),
    ("Munich", "Germany", "+49 89"), ("Paris", "France", "+33 1"),
    ("Amsterdam", "Netherlands", "+31 20"), ("Madrid", "Spain", "+34 91"),
    ("Milan", "Italy", "+39 02"), ("Stockholm", "Sweden", "+46 8"),
    ("Sydney", "Australia", "+61 2"), ("Tokyo", "Japan", "+81 3"),
];

#[rustfmt::skip]
const COMPANY_PREFIXES: [(&str, &str); 40] = [
    ("Acme", "acme"), ("Northwind", "northwind"), ("Globex", "globex"),
    ("Initech", "initech"), ("Umbrella", "umbrella"), ("Stark", "stark"),
    ("Wayne", "wayne"), ("Wonka", "wonka"), ("Blue Harbor", "blueharbor"),
    ("Red Rock", "redrock"), ("Silver Lake", "silverlake"), ("Green Valley", "greenvalley"),
    ("Iron Bridge", "ironbridge"), ("Summit", "summit"), ("Pioneer", "pioneer"),
    ("Evergreen", "evergreen"), ("Brightside", "brightside"), ("Clearwater", "clearwater"),
    ("Highland", "highland"), ("Oakridge", "oakridge"), ("Riverside", "riverside"),
    ("Sunrise", "sunrise"), ("Starlight", "starlight"), ("Keystone", "keystone"),
    ("Granite", "granite"), ("Cobalt", "cobalt"), ("Crescent", "crescent"),
    ("Falcon", "falcon"), ("Harbor", "harbor"), ("Lighthouse", "lighthouse"),
    ("Maple", "maple"), ("Meridian", "meridian"), ("Nimbus", "nimbus"), ("Orion", "orion"),
    ("Polaris", "polaris"), ("Quantum", "quantum"), ("Redwood", "redwood"),
    ("Sapphire", "sapphire"), ("Tidewater", "tidewater"), ("Vertex", "vertex"),
];

#[rustfmt::skip]
const COMPANY_CORES: [(&str, &str); 40] = [
    ("Analytics", "analytics"), ("Logistics", "logistics"), ("Software", "software"),
    ("Systems", "systems"), ("Labs", "labs"), ("Foods", "foods"), ("Health", "health"),
    ("Capital", "capital"), ("Energy", "energy"), ("Robotics", "robotics"),
    ("Media", "media"), ("Outfitters", "outfitters"), ("Consulting", "consulting"),
    ("Networks", "networks"), ("Dynamics", "dynamics"), ("Biotech", "biotech"),
    ("Freight", "freight"), ("Interiors", "interiors"), ("Motors", "motors"),
    ("Partners", "partners"), ("Pharma", "pharma"), ("Realty", "realty"),
    ("Retail", "retail"), ("Security", "security"), ("Solutions", "solutions"),
    ("Studios", "studios"), ("Telecom", "telecom"), ("Textiles", "textiles"),
    ("Travel", "travel"), ("Ventures", "ventures"), ("Apparel", "apparel"),
    ("Brewing", "brewing"), ("Cloud", "cloud"), ("Data", "data"), ("Design", "design"),
    ("Education", "education"), ("Finance", "finance"), ("Games", "games"),
    ("Insurance", "insurance"), ("Marine", "marine"),
];

#[rustfmt::skip]
const COMPANY_SUFFIXES: [(&str, &str); 6] = [
    ("Inc.", "inc"), ("LLC", "llc"), ("Ltd", "ltd"), ("GmbH", "gmbh"), ("Group", "group"),
    ("Co.", "co"),
];

/// Distinct base names before a cycle number is appended.
const COMPANY_COMBINATIONS: u64 = 40 * 40 * 6;

/// Industries, as a neutral key: each stand-in maps it to its own picklist values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Industry {
    Technology,
    Finance,
    Retail,
    Healthcare,
    Other,
}

/// A sample person.
#[derive(Clone, Debug)]
pub(crate) struct Person {
    pub(crate) first: &'static str,
    pub(crate) last: &'static str,
    /// Unique per sequence number.
    pub(crate) email: String,
    pub(crate) phone: String,
    pub(crate) mobile: String,
    pub(crate) title: &'static str,
    pub(crate) department: &'static str,
    pub(crate) city: &'static str,
    pub(crate) country: &'static str,
    /// `YYYY-MM-DD`.
    pub(crate) birthdate: String,
    /// 0–3: how far along the funnel (lead source / lifecycle stage index).
    pub(crate) stage: usize,
    pub(crate) website: String,
    /// The employer's name, as on the person's record.
    pub(crate) company: String,
}

/// A sample company.
#[derive(Clone, Debug)]
pub(crate) struct Company {
    /// Unique per sequence number.
    pub(crate) name: String,
    /// Unique per sequence number.
    pub(crate) domain: String,
    pub(crate) phone: String,
    pub(crate) industry: Industry,
    pub(crate) city: &'static str,
    pub(crate) country: &'static str,
    pub(crate) employees: u64,
    /// Whole currency units.
    pub(crate) revenue: u64,
    pub(crate) description: String,
}

/// SplitMix64: a well-mixed 64-bit value of `n`.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<T: Copy>(items: &[T], bits: u64) -> T {
    let len = u64::try_from(items.len()).unwrap_or(1).max(1);
    let index = usize::try_from(bits % len).unwrap_or(0);
    items[index]
}

fn phone(prefix: &str, bits: u64) -> String {
    format!("{prefix} 555 01{:02}", bits % 100)
}

/// The parts of the `n`th company name: prefix, core and suffix (display and slug each)
/// and the cycle number (0 for the first 9,600 companies).
#[allow(clippy::type_complexity)]
fn company_parts(
    n: u64,
) -> (
    (&'static str, &'static str),
    (&'static str, &'static str),
    (&'static str, &'static str),
    u64,
) {
    // A bijection on 0..COMPANY_COMBINATIONS (7919 is prime and shares no factor with
    // 9600), so neighbours get unrelated names and each cycle uses every name once.
    let slot = (n % COMPANY_COMBINATIONS) * 7919 % COMPANY_COMBINATIONS;
    let index = |value: u64| usize::try_from(value).unwrap_or(0);
    (
        COMPANY_PREFIXES[index(slot % 40)],
        COMPANY_CORES[index(slot / 40 % 40)],
        COMPANY_SUFFIXES[index(slot / 1600) % 6],
        n / COMPANY_COMBINATIONS,
    )
}

/// The `n`th company's name and domain, both unique per `n`.
fn company_name(n: u64) -> (String, String) {
    let ((prefix, prefix_slug), (core, core_slug), (suffix, suffix_slug), cycle) = company_parts(n);
    if cycle == 0 {
        (
            format!("{prefix} {core} {suffix}"),
            format!("{prefix_slug}{core_slug}{suffix_slug}.example"),
        )
    } else {
        let number = cycle + 1;
        (
            format!("{prefix} {core} {number} {suffix}"),
            format!("{prefix_slug}{core_slug}{number}{suffix_slug}.example"),
        )
    }
}

/// The `n`th sample person (working for sample company `n / 3`).
pub(crate) fn person(n: u64) -> Person {
    let bits = mix(n);
    let (first, first_slug) = pick(&FIRST_NAMES, bits);
    let (last, last_slug) = pick(&LAST_NAMES, bits >> 8);
    let (title, department) = pick(&TITLES, bits >> 16);
    let (city, country, prefix) = pick(&PLACES, bits >> 24);
    let (company, domain) = company_name(n / 3);
    let year = 1955 + (bits >> 32) % 50;
    let month = 1 + (bits >> 40) % 12;
    let day = 1 + (bits >> 44) % 28;
    Person {
        first,
        last,
        email: format!("{first_slug}.{last_slug}.{n}@{domain}"),
        phone: phone(prefix, bits >> 48),
        mobile: phone(prefix, bits >> 56),
        title,
        department,
        city,
        country,
        birthdate: format!("{year:04}-{month:02}-{day:02}"),
        stage: usize::try_from((bits >> 52) % 4).unwrap_or(0),
        website: format!("https://www.{domain}"),
        company,
    }
}

/// The `n`th sample company.
pub(crate) fn company(n: u64) -> Company {
    let (_, (core, _), _, _) = company_parts(n);
    let (name, domain) = company_name(n);
    let bits = mix(n ^ 0x00C0_FFEE);
    let (city, country, phone_prefix) = pick(&PLACES, bits);
    let industry = match core {
        "Analytics" | "Software" | "Systems" | "Labs" | "Robotics" | "Networks" | "Cloud"
        | "Data" | "Telecom" | "Security" | "Games" => Industry::Technology,
        "Capital" | "Finance" | "Insurance" | "Ventures" | "Partners" => Industry::Finance,
        "Retail" | "Outfitters" | "Apparel" | "Foods" | "Brewing" | "Textiles" => Industry::Retail,
        "Health" | "Biotech" | "Pharma" => Industry::Healthcare,
        _ => Industry::Other,
    };
    let employees = pick(&[12, 45, 120, 350, 800, 2_500, 12_000], bits >> 8);
    Company {
        description: format!(
            "{name} is a {} company based in {city}.",
            core.to_lowercase()
        ),
        name,
        domain,
        phone: phone(phone_prefix, bits >> 16),
        industry,
        city,
        country,
        employees,
        revenue: employees * (80_000 + (bits >> 24) % 120_000),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_and_emails_are_distinct() {
        let emails: HashSet<String> = (0..20_000).map(|n| person(n).email).collect();
        assert_eq!(emails.len(), 20_000);
        let names: HashSet<String> = (0..20_000).map(|n| company(n).name).collect();
        assert_eq!(names.len(), 20_000);
        let domains: HashSet<String> = (0..20_000).map(|n| company(n).domain).collect();
        assert_eq!(domains.len(), 20_000);
        let first: HashSet<&str> = (0..200).map(|n| person(n).first).collect();
        assert!(first.len() > 30);
    }

    #[test]
    fn values_look_real() {
        let p = person(7);
        assert!(p.email.contains('@') && p.email.ends_with(".example"));
        assert!(crate::clock::parse_date(&p.birthdate).is_some());
        assert!(p.phone.contains(" 555 01"));
        let c = company(7);
        assert!(c.revenue > 0 && c.employees > 0);
        assert!(c.description.starts_with(&c.name));
    }
}
