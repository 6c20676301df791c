//! Fleet traffic for the vehicle-telemetry use case, after the original generator (§4.3 of the
//! original's semantics): a seeded fleet moving around New York, telemetry, deliveries through
//! their lifecycle, alerts, slowly changing vehicles and drivers (status changes, corrections,
//! double updates of one key, soft deletes, and hard deletes of rows nothing points at), and
//! DQ violations at `--bad-ratio` as the original injected them — except those the source
//! DDL refuses, which are never sent (the summary says which and why).

use std::f64::consts::PI;
use std::sync::Arc;

use chrono::{Duration, NaiveDateTime, Utc};
use rand::Rng;
use rand::rngs::SmallRng;

use crate::config::spec::{ColumnType, TableSpec};

use super::plan::Plan;
use super::row::{Key, Row, Value};
use super::values::iso_utc;
use super::writer::{Step, Writer};

pub(crate) const TABLES: [&str; 5] = [
    "vehicles",
    "drivers",
    "vehicle_telemetry",
    "deliveries",
    "alerts",
];

/// References the use case implies without declaring them as foreign keys: (child, column, parent).
pub(crate) const IMPLIED_LINKS: &[(&str, &str, &str)] = &[
    ("vehicle_telemetry", "vehicle_id", "vehicles"),
    ("deliveries", "vehicle_id", "vehicles"),
    ("deliveries", "driver_id", "drivers"),
    ("alerts", "vehicle_id", "vehicles"),
    ("alerts", "driver_id", "drivers"),
];

/// Columns the traffic deliberately puts bad values in.
pub(crate) const TARGETED_COLUMNS: &[(&str, &str)] = &[
    ("vehicle_telemetry", "latitude"),
    ("vehicle_telemetry", "longitude"),
    ("vehicle_telemetry", "speed_kmh"),
    ("vehicle_telemetry", "fuel_level_pct"),
    ("vehicle_telemetry", "vehicle_id"),
    ("deliveries", "status"),
    ("alerts", "alert_type"),
    ("drivers", "employee_id"),
    ("drivers", "name"),
];

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Number,
    Integer,
}

/// Columns the traffic cannot do without, and the kind of type each needs.
const REQUIRED: &[(&str, &str, Kind)] = &[
    ("vehicles", "vin", Kind::Text),
    ("vehicles", "status", Kind::Text),
    ("drivers", "employee_id", Kind::Text),
    ("drivers", "name", Kind::Text),
    ("drivers", "status", Kind::Text),
    ("vehicle_telemetry", "vehicle_id", Kind::Integer),
    ("vehicle_telemetry", "latitude", Kind::Number),
    ("vehicle_telemetry", "longitude", Kind::Number),
    ("vehicle_telemetry", "speed_kmh", Kind::Number),
    ("vehicle_telemetry", "fuel_level_pct", Kind::Number),
    ("deliveries", "status", Kind::Text),
    ("alerts", "alert_type", Kind::Text),
];

/// Whether the config's tables are the vehicle use case's, as far as the traffic needs them.
pub(crate) fn fits(sources: &[TableSpec]) -> Result<(), String> {
    let find = |name: &str| sources.iter().find(|t| t.name == name);
    for name in TABLES {
        let table = find(name).ok_or_else(|| format!("the config has no table '{name}'"))?;
        let key = table.primary_key.as_deref().and_then(|k| table.column(k));
        if !key.is_some_and(|c| matches!(c.column_type, ColumnType::Int | ColumnType::Long)) {
            return Err(format!("table '{name}' needs an integer primary key"));
        }
    }
    for (table, column, kind) in REQUIRED {
        let col = find(table)
            .and_then(|t| t.column(column))
            .ok_or_else(|| format!("table '{table}' has no column '{column}'"))?;
        let ok = match kind {
            Kind::Text => matches!(col.column_type, ColumnType::String | ColumnType::Text),
            Kind::Integer => matches!(col.column_type, ColumnType::Int | ColumnType::Long),
            Kind::Number => col.column_type.is_numeric(),
        };
        if !ok {
            return Err(format!(
                "column '{table}.{column}' has type {}, which the vehicle traffic cannot write",
                col.column_type
            ));
        }
    }
    Ok(())
}

// ----- the fleet -----

const ZONES: [(&str, f64, f64); 3] = [
    ("manhattan", 40.7831, -73.9712),
    ("brooklyn", 40.6782, -73.9442),
    ("queens", 40.7282, -73.7949),
];
/// How far (degrees) a vehicle strays from its zone's centre.
const ZONE_RADIUS: f64 = 0.04;
/// Simulated seconds between two telemetry rows of a vehicle.
const TICK_SECONDS: f64 = 5.0;
const MAX_SPEED: f64 = 80.0;
/// Open deliveries given a chance to move on per delivery action.
const DELIVERY_MOVES: usize = 3;
const MAKES: [(&str, &str); 6] = [
    ("Ford", "Transit"),
    ("Ford", "E-Transit"),
    ("Toyota", "Hiace"),
    ("Mercedes", "Sprinter"),
    ("Chevrolet", "Express"),
    ("RAM", "ProMaster"),
];
const FUELS: [&str; 5] = ["diesel", "diesel", "electric", "hybrid", "gasoline"];
const ADDRESSES: [&str; 8] = [
    "350 5th Ave, New York, NY",
    "1 Centre St, New York, NY",
    "200 Eastern Pkwy, Brooklyn, NY",
    "89 E 42nd St, New York, NY",
    "4 Pennsylvania Plaza, New York, NY",
    "120-01 Roosevelt Ave, Queens, NY",
    "1000 5th Ave, New York, NY",
    "30 Rockefeller Plaza, New York, NY",
];
const FIRST: [&str; 10] = [
    "Maria", "James", "Aisha", "Wei", "Carlos", "Olga", "Samuel", "Priya", "Tom", "Fatima",
];
const LAST: [&str; 10] = [
    "Garcia", "Smith", "Khan", "Zhang", "Lopez", "Ivanova", "Johnson", "Patel", "Miller", "Ali",
];
/// §4.3's bad values.
const BAD_DELIVERY_STATUS: [&str; 5] = ["CANCELLED", "unknown", "pending", "RETURNED", "lost"];
const BAD_ALERT_TYPES: [&str; 5] = [
    "tire_pressure",
    "battery_low",
    "door_open",
    "SPEEDING",
    "unknown_alert",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VehicleStatus {
    Active,
    Maintenance,
    Decommissioned,
}

impl VehicleStatus {
    fn name(self) -> &'static str {
        match self {
            VehicleStatus::Active => "active",
            VehicleStatus::Maintenance => "maintenance",
            VehicleStatus::Decommissioned => "decommissioned",
        }
    }
}

#[derive(Debug, Clone)]
struct Vehicle {
    key: Key,
    status: VehicleStatus,
    zone: usize,
    lat: f64,
    lon: f64,
    heading: f64,
    speed: f64,
    fuel: f64,
    engine_temp: f64,
    odometer: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriverStatus {
    Available,
    OnDuty,
    Suspended,
    Terminated,
}

impl DriverStatus {
    fn name(self) -> &'static str {
        match self {
            DriverStatus::Available => "available",
            DriverStatus::OnDuty => "on_duty",
            DriverStatus::Suspended => "suspended",
            DriverStatus::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Clone)]
struct Driver {
    key: Key,
    status: DriverStatus,
    safety: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Assigned,
    PickedUp,
    InTransit,
    Delivered,
    Failed,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Assigned => "assigned",
            Stage::PickedUp => "picked_up",
            Stage::InTransit => "in_transit",
            Stage::Delivered => "delivered",
            Stage::Failed => "failed",
        }
    }

    fn finished(self) -> bool {
        matches!(self, Stage::Delivered | Stage::Failed)
    }
}

#[derive(Debug, Clone)]
struct Delivery {
    key: Key,
    stage: Stage,
}

#[derive(Debug, Clone)]
struct Alert {
    key: Key,
    acknowledged: bool,
}

/// Table indexes in the plan.
#[derive(Debug, Clone, Copy)]
struct Tables {
    vehicles: usize,
    drivers: usize,
    telemetry: usize,
    deliveries: usize,
    alerts: usize,
}

/// A telemetry violation of §4.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TelemetryFault {
    Latitude,
    Longitude,
    Speed,
    Fuel,
    NullVehicle,
}

const TELEMETRY_FAULTS: [TelemetryFault; 5] = [
    TelemetryFault::Latitude,
    TelemetryFault::Longitude,
    TelemetryFault::Speed,
    TelemetryFault::Fuel,
    TelemetryFault::NullVehicle,
];

pub(crate) struct VehicleTraffic {
    rng: SmallRng,
    bad_ratio: f64,
    plan: Arc<Plan>,
    t: Tables,
    vehicles: Vec<Vehicle>,
    drivers: Vec<Driver>,
    deliveries: Vec<Delivery>,
    alerts: Vec<Alert>,
    iteration: u64,
    /// §4.3 violations the source DDL refuses, with the reason (for the summary).
    notes: Vec<String>,
}

impl VehicleTraffic {
    pub(crate) fn new(plan: Arc<Plan>, rng: SmallRng, bad_ratio: f64) -> VehicleTraffic {
        let index = |name: &str| plan.table_index(name).unwrap_or(0);
        let t = Tables {
            vehicles: index("vehicles"),
            drivers: index("drivers"),
            telemetry: index("vehicle_telemetry"),
            deliveries: index("deliveries"),
            alerts: index("alerts"),
        };
        let mut traffic = VehicleTraffic {
            rng,
            bad_ratio,
            plan,
            t,
            vehicles: Vec::new(),
            drivers: Vec::new(),
            deliveries: Vec::new(),
            alerts: Vec::new(),
            iteration: 0,
            notes: Vec::new(),
        };
        traffic.notes = traffic.refused_faults();
        traffic
    }

    /// Telemetry is append-only; every other table sees updates and deletes.
    pub(crate) fn retained(plan: &Plan) -> Vec<bool> {
        plan.tables
            .iter()
            .map(|t| t.name != "vehicle_telemetry")
            .collect()
    }

    pub(crate) fn notes(&self) -> &[String] {
        &self.notes
    }

    /// §4.3's violations that the source DDL would refuse, checked against the tables as they are.
    fn refused_faults(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let probes = [
            (
                self.t.telemetry,
                "vehicle_id",
                Value::Null,
                "telemetry with a NULL vehicle_id",
            ),
            (
                self.t.telemetry,
                "latitude",
                Value::Float(150.0),
                "telemetry with latitude out of range",
            ),
            (
                self.t.telemetry,
                "longitude",
                Value::Float(300.0),
                "telemetry with longitude out of range",
            ),
            (
                self.t.telemetry,
                "speed_kmh",
                Value::Float(450.0),
                "telemetry with speed out of range",
            ),
            (
                self.t.telemetry,
                "fuel_level_pct",
                Value::Float(150.0),
                "telemetry with fuel level out of range",
            ),
            (
                self.t.drivers,
                "name",
                Value::Null,
                "drivers with a NULL name",
            ),
        ];
        for (t, column, value, what) in probes {
            let shape = &self.plan.tables[t];
            let Some(c) = shape.column_index(column) else {
                continue;
            };
            let verdict = shape.conform(c, value).and_then(|v| shape.accepts(c, &v));
            if let Err(refusal) = verdict {
                notes.push(format!(
                    "{what} (as the original generated) are not written: {}.{column}: {refusal}",
                    shape.name
                ));
            }
        }
        notes
    }

    pub(crate) async fn seed(&mut self, w: &mut Writer) -> Step {
        for _ in 0..15 {
            self.register_vehicle(w, VehicleStatus::Active).await?;
        }
        for _ in 0..10 {
            self.hire_driver(w).await?;
        }
        w.commit().await
    }

    /// One iteration of the original's `generate` loop.
    pub(crate) async fn step(&mut self, w: &mut Writer) -> Step<bool> {
        self.iteration += 1;
        let mut wrote = self.telemetry(w).await?;
        if self.iteration.is_multiple_of(3) {
            wrote |= self.delivery_action(w).await?;
        }
        if self.iteration.is_multiple_of(4) {
            wrote |= self.alerts_round(w).await?;
        }
        if self.iteration.is_multiple_of(5) {
            wrote |= self.vehicle_changes(w).await?;
            wrote |= self.driver_changes(w).await?;
        }
        Ok(wrote)
    }

    // ----- rows -----

    fn now() -> NaiveDateTime {
        Utc::now().naive_utc()
    }

    /// A row of `table` with `values` set by column name (columns the config lacks are skipped),
    /// every other column filled with a valid value.
    fn row(&mut self, w: &mut Writer, table: usize, values: Vec<(&str, Value)>) -> Step<Row> {
        let plan = Arc::clone(&self.plan);
        let shape = &plan.tables[table];
        let now = Self::now();
        let mut row = Row::nulls(shape.columns.len());
        let mut set = vec![false; shape.columns.len()];
        for (name, value) in values {
            if let Some(c) = shape.column_index(name)
                && let Ok(v) = shape.conform(c, value)
            {
                row.set(c, v);
                set[c] = true;
            }
        }
        for (c, &given) in set.iter().enumerate() {
            if !given && !shape.columns[c].generated {
                row.set(c, w.valid_value(table, c, &mut self.rng, now)?);
            }
        }
        Ok(row)
    }

    /// Changes (by column name, skipping columns the config lacks) plus `updated_at`.
    fn changes(&self, table: usize, values: Vec<(&str, Value)>) -> Vec<(usize, Value)> {
        let shape = &self.plan.tables[table];
        let mut out: Vec<(usize, Value)> = values
            .into_iter()
            .filter_map(|(name, v)| shape.column_index(name).map(|c| (c, v)))
            .collect();
        if let Some(c) = shape.column_index("updated_at") {
            out.push((c, Value::Text(iso_utc(Self::now()))));
        }
        out
    }

    fn pick<'a, T>(rng: &mut SmallRng, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[rng.random_range(0..items.len())])
        }
    }

    fn digits(&mut self, n: u32) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
            .collect()
    }

    fn phone(&mut self) -> String {
        format!("+1{}{}", self.rng.random_range(2..10u8), self.digits(9))
    }

    // ----- vehicles -----

    async fn register_vehicle(&mut self, w: &mut Writer, status: VehicleStatus) -> Step {
        let t = self.t.vehicles;
        let vin_col = self.plan.tables[t].column_index("vin");
        let mut vin = self.vin();
        while vin_col.is_some_and(|c| w.accepts(t, c, &Value::text(vin.clone())).is_err()) {
            vin = self.vin();
        }
        let (make, model) = MAKES[self.rng.random_range(0..MAKES.len())];
        let now = iso_utc(Self::now());
        let plate = self.plate();
        let values = vec![
            ("vin", Value::Text(vin)),
            ("license_plate", Value::Text(plate)),
            ("make", Value::text(make)),
            ("model", Value::text(model)),
            ("year", Value::Int(self.rng.random_range(2018..=2025))),
            (
                "fuel_type",
                Value::text(FUELS[self.rng.random_range(0..FUELS.len())]),
            ),
            ("status", Value::text(status.name())),
            ("created_at", Value::Text(now.clone())),
            ("updated_at", Value::Text(now)),
        ];
        let row = self.row(w, t, values)?;
        let key = w.insert(t, row).await?;
        let zone = self.rng.random_range(0..ZONES.len());
        let (_, lat, lon) = ZONES[zone];
        self.vehicles.push(Vehicle {
            key,
            status,
            zone,
            lat: lat + self.rng.random_range(-0.02..0.02),
            lon: lon + self.rng.random_range(-0.02..0.02),
            heading: self.rng.random_range(0.0..2.0 * PI),
            speed: self.rng.random_range(0.0..40.0),
            fuel: self.rng.random_range(40.0..100.0),
            engine_temp: self.rng.random_range(85.0..95.0),
            odometer: self.rng.random_range(5_000.0..120_000.0),
        });
        Ok(())
    }

    /// 17 characters, uppercase letters (without I, O, Q, as real VINs) and digits.
    fn vin(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";
        (0..17)
            .map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())]))
            .collect()
    }

    fn plate(&mut self) -> String {
        let letters: String = (0..3)
            .map(|_| char::from(b'A' + self.rng.random_range(0..26u8)))
            .collect();
        format!("{letters}-{}", self.digits(4))
    }

    async fn vehicle_changes(&mut self, w: &mut Writer) -> Step<bool> {
        let t = self.t.vehicles;
        let mut wrote = false;
        if let Some(i) = pick_where(&mut self.rng, &self.vehicles, |v| {
            v.status != VehicleStatus::Decommissioned
        }) {
            let key = self.vehicles[i].key.clone();
            let status = self.vehicles[i].status;
            let next = match status {
                VehicleStatus::Active if self.rng.random_bool(0.5) => {
                    Some(VehicleStatus::Maintenance)
                }
                VehicleStatus::Maintenance if self.rng.random_bool(0.3) => {
                    Some(VehicleStatus::Active)
                }
                _ => None,
            };
            if let Some(next) = next {
                w.update(
                    t,
                    &key,
                    self.changes(t, vec![("status", Value::text(next.name()))]),
                )
                .await?;
                self.vehicles[i].status = next;
                wrote = true;
            }
            if self.rng.random_bool(0.3) {
                let fuel = FUELS[self.rng.random_range(0..FUELS.len())];
                let current = w.image(t, &key).and_then(|r| {
                    self.plan.tables[t]
                        .column_index("fuel_type")
                        .map(|c| r.get(c).clone())
                });
                if current != Some(Value::text(fuel)) {
                    w.update(
                        t,
                        &key,
                        self.changes(t, vec![("fuel_type", Value::text(fuel))]),
                    )
                    .await?;
                    wrote = true;
                }
            }
            let active = self
                .vehicles
                .iter()
                .filter(|v| v.status == VehicleStatus::Active)
                .count();
            if active > 8 && self.rng.random_bool(0.15) {
                // Soft delete: the row stays, its status says it is gone.
                let gone = VehicleStatus::Decommissioned;
                w.update(
                    t,
                    &key,
                    self.changes(t, vec![("status", Value::text(gone.name()))]),
                )
                .await?;
                self.vehicles[i].status = gone;
                wrote = true;
            } else if self.rng.random_bool(0.2) {
                // A double update of one key in quick succession: year corrected, then the plate.
                let year = self.rng.random_range(2018..=2025);
                w.update(t, &key, self.changes(t, vec![("year", Value::Int(year))]))
                    .await?;
                let plate = self.plate();
                w.update(
                    t,
                    &key,
                    self.changes(t, vec![("license_plate", Value::Text(plate))]),
                )
                .await?;
                wrote = true;
            }
        }
        if self.rng.random_bool(0.2) {
            // A new vehicle awaits its inspection before it joins the active fleet.
            self.register_vehicle(w, VehicleStatus::Maintenance).await?;
            wrote = true;
        }
        if self.rng.random_bool(0.15) {
            let unreferenced: Vec<usize> = (0..self.vehicles.len())
                .filter(|&i| !w.is_referenced(t, &self.vehicles[i].key))
                .collect();
            if let Some(&i) = Self::pick(&mut self.rng, &unreferenced) {
                // A registration entered by mistake, removed before any row pointed at it.
                let key = self.vehicles[i].key.clone();
                w.delete(t, &key).await?;
                self.vehicles.remove(i);
                wrote = true;
            }
        }
        Ok(wrote)
    }

    // ----- drivers -----

    async fn hire_driver(&mut self, w: &mut Writer) -> Step {
        let t = self.t.drivers;
        let employee_col = self.plan.tables[t].column_index("employee_id");
        let bad = self.rng.random_bool(self.bad_ratio);
        let mut employee_id = if bad {
            self.bad_employee_id()
        } else {
            format!("DRV{}", self.digits(5))
        };
        while employee_col
            .is_some_and(|c| w.accepts(t, c, &Value::text(employee_id.clone())).is_err())
        {
            employee_id = if bad {
                self.bad_employee_id()
            } else {
                format!("DRV{}", self.digits(5))
            };
        }
        let status = [
            DriverStatus::Available,
            DriverStatus::Available,
            DriverStatus::OnDuty,
        ][self.rng.random_range(0..3)];
        let safety = (self.rng.random_range(70.0..=100.0f64) * 10.0).round() / 10.0;
        let name = format!(
            "{} {}",
            FIRST[self.rng.random_range(0..FIRST.len())],
            LAST[self.rng.random_range(0..LAST.len())]
        );
        let now = iso_utc(Self::now());
        let license = format!("DL{}", self.digits(6));
        let phone = self.phone();
        let values = vec![
            ("employee_id", Value::Text(employee_id)),
            ("name", Value::Text(name)),
            ("license_number", Value::Text(license)),
            ("phone", Value::Text(phone)),
            ("status", Value::text(status.name())),
            ("safety_score", Value::Float(safety)),
            ("created_at", Value::Text(now.clone())),
            ("updated_at", Value::Text(now)),
        ];
        let row = self.row(w, t, values)?;
        let key = w.insert(t, row).await?;
        self.drivers.push(Driver {
            key,
            status,
            safety,
        });
        Ok(())
    }

    /// One of §4.3's malformed employee ids, varied so that the UNIQUE column takes it.
    fn bad_employee_id(&mut self) -> String {
        match self.rng.random_range(0..5) {
            0 => format!("EMP{}", self.digits(3)),
            1 => {
                let n = self.rng.random_range(1..=4);
                format!("DRV{}", self.digits(n))
            }
            2 => format!("drv{}", self.digits(5)),
            3 => format!("DRIVER{}", self.digits(5)),
            _ => self.digits(5),
        }
    }

    async fn driver_changes(&mut self, w: &mut Writer) -> Step<bool> {
        let t = self.t.drivers;
        let mut wrote = false;
        if let Some(i) = pick_where(&mut self.rng, &self.drivers, |d| {
            d.status != DriverStatus::Terminated
        }) {
            let key = self.drivers[i].key.clone();
            if self.rng.random_bool(0.5) {
                let safety = (self.drivers[i].safety + self.rng.random_range(-5.0..=5.0f64))
                    .clamp(0.0, 100.0);
                let safety = (safety * 10.0).round() / 10.0;
                if safety != self.drivers[i].safety {
                    w.update(
                        t,
                        &key,
                        self.changes(t, vec![("safety_score", Value::Float(safety))]),
                    )
                    .await?;
                    self.drivers[i].safety = safety;
                    wrote = true;
                }
            }
            let next = match self.drivers[i].status {
                DriverStatus::Available if self.rng.random_bool(0.4) => Some(DriverStatus::OnDuty),
                DriverStatus::OnDuty => {
                    let r: f64 = self.rng.random();
                    if r < 0.3 {
                        Some(DriverStatus::Available)
                    } else if r < 0.4 {
                        Some(DriverStatus::Suspended)
                    } else {
                        None
                    }
                }
                DriverStatus::Suspended if self.rng.random_bool(0.3) => {
                    Some(DriverStatus::Available)
                }
                _ => None,
            };
            if let Some(next) = next {
                w.update(
                    t,
                    &key,
                    self.changes(t, vec![("status", Value::text(next.name()))]),
                )
                .await?;
                self.drivers[i].status = next;
                wrote = true;
            }
            let working = self
                .drivers
                .iter()
                .filter(|d| d.status != DriverStatus::Terminated)
                .count();
            if working > 6 && self.rng.random_bool(0.08) {
                // Soft delete.
                let gone = DriverStatus::Terminated;
                w.update(
                    t,
                    &key,
                    self.changes(t, vec![("status", Value::text(gone.name()))]),
                )
                .await?;
                self.drivers[i].status = gone;
                wrote = true;
            } else if self.rng.random_bool(0.2) {
                // Double update of one key: a new phone, then a new safety score.
                let phone = self.phone();
                w.update(
                    t,
                    &key,
                    self.changes(t, vec![("phone", Value::Text(phone))]),
                )
                .await?;
                let safety = ((self.drivers[i].safety + self.rng.random_range(0.5..3.0f64))
                    .min(100.0)
                    * 10.0)
                    .round()
                    / 10.0;
                w.update(
                    t,
                    &key,
                    self.changes(t, vec![("safety_score", Value::Float(safety))]),
                )
                .await?;
                self.drivers[i].safety = safety;
                wrote = true;
            }
        }
        if self.rng.random_bool(0.2) {
            self.hire_driver(w).await?;
            wrote = true;
        }
        if self.rng.random_bool(0.15) {
            let unreferenced: Vec<usize> = (0..self.drivers.len())
                .filter(|&i| !w.is_referenced(t, &self.drivers[i].key))
                .collect();
            if let Some(&i) = Self::pick(&mut self.rng, &unreferenced) {
                // A hire entered by mistake, removed before any delivery or alert named them.
                let key = self.drivers[i].key.clone();
                w.delete(t, &key).await?;
                self.drivers.remove(i);
                wrote = true;
            }
        }
        Ok(wrote)
    }

    fn working_driver(&mut self) -> Value {
        let keys: Vec<Key> = self
            .drivers
            .iter()
            .filter(|d| matches!(d.status, DriverStatus::Available | DriverStatus::OnDuty))
            .map(|d| d.key.clone())
            .collect();
        Self::pick(&mut self.rng, &keys)
            .map(Key::to_value)
            .unwrap_or(Value::Null)
    }

    // ----- telemetry -----

    async fn telemetry(&mut self, w: &mut Writer) -> Step<bool> {
        let active: Vec<usize> = (0..self.vehicles.len())
            .filter(|&i| self.vehicles[i].status == VehicleStatus::Active)
            .collect();
        for &i in &active {
            self.drive(i);
            let v = self.vehicles[i].clone();
            let now = iso_utc(Self::now());
            let flag = |rng: &mut SmallRng| {
                Value::text(if rng.random_bool(0.03) {
                    "true"
                } else {
                    "false"
                })
            };
            let mut values = vec![
                ("vehicle_id", v.key.to_value()),
                ("recorded_at", Value::Text(now.clone())),
                ("latitude", Value::Float(round(v.lat, 6))),
                ("longitude", Value::Float(round(v.lon, 6))),
                ("speed_kmh", Value::Float(round(v.speed, 1))),
                ("fuel_level_pct", Value::Float(round(v.fuel, 1))),
                ("engine_temp_c", Value::Float(round(v.engine_temp, 1))),
                ("odometer_km", Value::Float(round(v.odometer, 1))),
                (
                    "engine_status",
                    Value::text(if v.speed > 0.0 { "running" } else { "idle" }),
                ),
                ("harsh_braking", flag(&mut self.rng)),
                ("harsh_acceleration", flag(&mut self.rng)),
                ("created_at", Value::Text(now)),
            ];
            if self.rng.random_bool(self.bad_ratio)
                && let Some((column, value)) = self.telemetry_fault(w)
                && let Some(slot) = values.iter_mut().find(|(name, _)| *name == column)
            {
                slot.1 = value;
            }
            let row = self.row(w, self.t.telemetry, values)?;
            w.insert(self.t.telemetry, row).await?;
        }
        Ok(!active.is_empty())
    }

    /// One of §4.3's telemetry violations the database accepts, chosen at random.
    fn telemetry_fault(&mut self, w: &Writer) -> Option<(&'static str, Value)> {
        let t = self.t.telemetry;
        let shape = &self.plan.tables[t];
        let sign = |rng: &mut SmallRng| if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let mut options = Vec::new();
        for fault in TELEMETRY_FAULTS {
            let (column, value) = match fault {
                TelemetryFault::Latitude => (
                    "latitude",
                    Value::Float(round(
                        sign(&mut self.rng) * self.rng.random_range(91.0..200.0),
                        4,
                    )),
                ),
                TelemetryFault::Longitude => (
                    "longitude",
                    Value::Float(round(
                        sign(&mut self.rng) * self.rng.random_range(181.0..500.0),
                        4,
                    )),
                ),
                TelemetryFault::Speed => (
                    "speed_kmh",
                    Value::Float(round(self.rng.random_range(351.0..600.0), 1)),
                ),
                TelemetryFault::Fuel => (
                    "fuel_level_pct",
                    Value::Float(round(self.rng.random_range(121.0..200.0), 1)),
                ),
                TelemetryFault::NullVehicle => ("vehicle_id", Value::Null),
            };
            let Some(c) = shape.column_index(column) else {
                continue;
            };
            if shape
                .conform(c, value.clone())
                .is_ok_and(|v| w.accepts(t, c, &v).is_ok())
            {
                options.push((column, value));
            }
        }
        Self::pick(&mut self.rng, &options).cloned()
    }

    /// Moves a vehicle one tick: speed, heading, position inside its zone, fuel, engine heat.
    fn drive(&mut self, i: usize) {
        let rng = &mut self.rng;
        let v = &mut self.vehicles[i];
        v.speed = if rng.random_bool(0.05) {
            0.0
        } else {
            (v.speed + rng.random_range(-12.0..12.0)).clamp(0.0, MAX_SPEED)
        };
        v.heading += rng.random_range(-0.4..0.4);
        let km = v.speed * TICK_SECONDS / 3600.0;
        v.lat += v.heading.cos() * km / 111.0;
        v.lon += v.heading.sin() * km / (111.0 * v.lat.to_radians().cos());
        let (_, clat, clon) = ZONES[v.zone];
        if (v.lat - clat).abs() > ZONE_RADIUS || (v.lon - clon).abs() > ZONE_RADIUS {
            v.heading += PI;
            v.lat = v.lat.clamp(clat - ZONE_RADIUS, clat + ZONE_RADIUS);
            v.lon = v.lon.clamp(clon - ZONE_RADIUS, clon + ZONE_RADIUS);
        }
        v.odometer += km;
        v.fuel -= rng.random_range(0.1..0.8);
        if v.fuel < 8.0 {
            v.fuel = rng.random_range(92.0..100.0);
        }
        v.engine_temp = (v.engine_temp + rng.random_range(-2.0..2.2)).clamp(80.0, 108.0);
    }

    // ----- deliveries -----

    /// A new delivery (60 %), then a few open ones move on, and now and then a finished one is purged.
    async fn delivery_action(&mut self, w: &mut Writer) -> Step<bool> {
        let mut wrote = self.rng.random_bool(0.6) && self.create_delivery(w).await?;
        for _ in 0..DELIVERY_MOVES {
            wrote |= self.progress_delivery(w).await?;
        }
        if self.rng.random_bool(0.25)
            && let Some(i) = pick_where(&mut self.rng, &self.deliveries, |d| d.stage.finished())
        {
            // Finished deliveries are purged now and then: a hard delete.
            let key = self.deliveries[i].key.clone();
            w.delete(self.t.deliveries, &key).await?;
            self.deliveries.remove(i);
            wrote = true;
        }
        Ok(wrote)
    }

    async fn create_delivery(&mut self, w: &mut Writer) -> Step<bool> {
        let active: Vec<Key> = self
            .vehicles
            .iter()
            .filter(|v| v.status == VehicleStatus::Active)
            .map(|v| v.key.clone())
            .collect();
        let Some(vehicle) = Self::pick(&mut self.rng, &active).cloned() else {
            return Ok(false);
        };
        let driver = self.working_driver();
        let status = if self.rng.random_bool(self.bad_ratio) {
            self.bad_delivery_status()
        } else {
            Stage::Assigned.name()
        };
        let now = Self::now();
        let scheduled = now + Duration::minutes(self.rng.random_range(60..=360));
        let pickup = ADDRESSES[self.rng.random_range(0..ADDRESSES.len())];
        let mut drop_off = ADDRESSES[self.rng.random_range(0..ADDRESSES.len())];
        while drop_off == pickup {
            drop_off = ADDRESSES[self.rng.random_range(0..ADDRESSES.len())];
        }
        let customer = format!("Customer {:04}", self.rng.random_range(1..10_000));
        let phone = self.phone();
        let values = vec![
            ("vehicle_id", vehicle.to_value()),
            ("driver_id", driver),
            ("status", Value::text(status)),
            ("pickup_address", Value::text(pickup)),
            ("delivery_address", Value::text(drop_off)),
            ("scheduled_time", Value::Text(iso_utc(scheduled))),
            ("actual_pickup_time", Value::Null),
            ("actual_delivery_time", Value::Null),
            ("customer_name", Value::Text(customer)),
            ("customer_phone", Value::Text(phone)),
            ("notes", Value::Null),
            ("created_at", Value::Text(iso_utc(now))),
            ("updated_at", Value::Text(iso_utc(now))),
        ];
        let row = self.row(w, self.t.deliveries, values)?;
        let key = w.insert(self.t.deliveries, row).await?;
        self.deliveries.push(Delivery {
            key,
            stage: Stage::Assigned,
        });
        Ok(true)
    }

    fn bad_delivery_status(&mut self) -> &'static str {
        BAD_DELIVERY_STATUS[self.rng.random_range(0..BAD_DELIVERY_STATUS.len())]
    }

    /// Moves a random open delivery along assigned → picked_up → in_transit → delivered | failed.
    /// A bad status (at the bad ratio) is written instead without moving it: the next valid
    /// update then carries it on.
    async fn progress_delivery(&mut self, w: &mut Writer) -> Step<bool> {
        let t = self.t.deliveries;
        let Some(i) = pick_where(&mut self.rng, &self.deliveries, |d| !d.stage.finished()) else {
            return Ok(false);
        };
        let key = self.deliveries[i].key.clone();
        if self.rng.random_bool(self.bad_ratio) {
            let status = self.bad_delivery_status();
            w.update(
                t,
                &key,
                self.changes(t, vec![("status", Value::text(status))]),
            )
            .await?;
            return Ok(true);
        }
        let r: f64 = self.rng.random();
        let next = match self.deliveries[i].stage {
            Stage::Assigned if r < 0.3 => Stage::PickedUp,
            Stage::PickedUp if r < 0.4 => Stage::InTransit,
            Stage::InTransit if r < 0.2 => Stage::Delivered,
            Stage::InTransit if r < 0.25 => Stage::Failed,
            _ => return Ok(false),
        };
        let now = Value::Text(iso_utc(Self::now()));
        let mut values = vec![("status", Value::text(next.name()))];
        match next {
            Stage::PickedUp => values.push(("actual_pickup_time", now)),
            Stage::Delivered => values.push(("actual_delivery_time", now)),
            Stage::Failed => values.push(("notes", Value::text("Customer not available"))),
            _ => {}
        }
        w.update(t, &key, self.changes(t, values)).await?;
        self.deliveries[i].stage = next;
        Ok(true)
    }

    // ----- alerts -----

    async fn alerts_round(&mut self, w: &mut Writer) -> Step<bool> {
        let t = self.t.alerts;
        let mut wrote = false;
        let active: Vec<usize> = (0..self.vehicles.len())
            .filter(|&i| self.vehicles[i].status == VehicleStatus::Active)
            .collect();
        for i in active {
            let v = self.vehicles[i].clone();
            let mut raised: Vec<(&str, &str, String)> = Vec::new();
            if v.speed > 70.0 && self.rng.random_bool(0.3) {
                raised.push((
                    "speeding",
                    "warning",
                    format!("Speed {:.1} km/h above 70 km/h", v.speed),
                ));
            }
            if v.fuel < 20.0 && self.rng.random_bool(0.4) {
                let severity = if v.fuel < 10.0 { "critical" } else { "warning" };
                raised.push(("low_fuel", severity, format!("Fuel level {:.1}%", v.fuel)));
            }
            if v.engine_temp > 100.0 && self.rng.random_bool(0.5) {
                raised.push((
                    "engine_overheat",
                    "critical",
                    format!("Engine temperature {:.1} °C", v.engine_temp),
                ));
            }
            if self.rng.random_bool(0.02) {
                raised.push((
                    "harsh_braking",
                    "info",
                    "Harsh braking detected".to_string(),
                ));
            }
            for (alert_type, severity, message) in raised {
                let alert_type = if self.rng.random_bool(self.bad_ratio) {
                    BAD_ALERT_TYPES[self.rng.random_range(0..BAD_ALERT_TYPES.len())]
                } else {
                    alert_type
                };
                let driver = self.working_driver();
                let values = vec![
                    ("vehicle_id", v.key.to_value()),
                    ("driver_id", driver),
                    ("alert_type", Value::text(alert_type)),
                    ("severity", Value::text(severity)),
                    ("message", Value::Text(message)),
                    ("latitude", Value::Float(round(v.lat, 6))),
                    ("longitude", Value::Float(round(v.lon, 6))),
                    ("acknowledged", Value::text("false")),
                    ("acknowledged_at", Value::Null),
                    ("created_at", Value::Text(iso_utc(Self::now()))),
                ];
                let row = self.row(w, t, values)?;
                let key = w.insert(t, row).await?;
                self.alerts.push(Alert {
                    key,
                    acknowledged: false,
                });
                wrote = true;
            }
        }
        if self.rng.random_bool(0.3)
            && let Some(i) = pick_where(&mut self.rng, &self.alerts, |a| !a.acknowledged)
        {
            let key = self.alerts[i].key.clone();
            let now = Value::Text(iso_utc(Self::now()));
            let changes = self.changes(
                t,
                vec![
                    ("acknowledged", Value::text("true")),
                    ("acknowledged_at", now),
                ],
            );
            w.update(t, &key, changes).await?;
            self.alerts[i].acknowledged = true;
            wrote = true;
        }
        if self.rng.random_bool(0.1)
            && let Some(i) = pick_where(&mut self.rng, &self.alerts, |a| a.acknowledged)
        {
            // Acknowledged alerts are purged now and then: a hard delete.
            let key = self.alerts[i].key.clone();
            w.delete(t, &key).await?;
            self.alerts.remove(i);
            wrote = true;
        }
        Ok(wrote)
    }
}

/// The index of a random item satisfying `pred`.
fn pick_where<T>(rng: &mut SmallRng, items: &[T], pred: impl Fn(&T) -> bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..items.len()).filter(|&i| pred(&items[i])).collect();
    if candidates.is_empty() {
        None
    } else {
        Some(candidates[rng.random_range(0..candidates.len())])
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}
