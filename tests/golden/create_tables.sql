CREATE TABLE IF NOT EXISTS vehicles (
    id SERIAL PRIMARY KEY,
    vin VARCHAR(255) NOT NULL UNIQUE,
    license_plate VARCHAR(255),
    make VARCHAR(255),
    model VARCHAR(255),
    year INTEGER,
    fuel_type VARCHAR(255),
    status VARCHAR(255),
    created_at VARCHAR(255),
    updated_at VARCHAR(255)
);

CREATE TABLE IF NOT EXISTS drivers (
    id SERIAL PRIMARY KEY,
    employee_id VARCHAR(255) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL,
    license_number VARCHAR(255),
    phone VARCHAR(255),
    status VARCHAR(255),
    safety_score DOUBLE PRECISION,
    created_at VARCHAR(255),
    updated_at VARCHAR(255)
);

CREATE TABLE IF NOT EXISTS vehicle_telemetry (
    id SERIAL PRIMARY KEY,
    vehicle_id INTEGER,
    recorded_at VARCHAR(255),
    latitude DOUBLE PRECISION,
    longitude DOUBLE PRECISION,
    speed_kmh DOUBLE PRECISION,
    fuel_level_pct DOUBLE PRECISION,
    engine_temp_c DOUBLE PRECISION,
    odometer_km DOUBLE PRECISION,
    engine_status VARCHAR(255),
    harsh_braking VARCHAR(255),
    harsh_acceleration VARCHAR(255),
    created_at VARCHAR(255)
);

CREATE TABLE IF NOT EXISTS deliveries (
    id SERIAL PRIMARY KEY,
    vehicle_id INTEGER,
    driver_id INTEGER,
    status VARCHAR(255),
    pickup_address VARCHAR(255),
    delivery_address VARCHAR(255),
    scheduled_time VARCHAR(255),
    actual_pickup_time VARCHAR(255),
    actual_delivery_time VARCHAR(255),
    customer_name VARCHAR(255),
    customer_phone VARCHAR(255),
    notes VARCHAR(255),
    created_at VARCHAR(255),
    updated_at VARCHAR(255)
);

CREATE TABLE IF NOT EXISTS alerts (
    id SERIAL PRIMARY KEY,
    vehicle_id INTEGER,
    driver_id INTEGER,
    alert_type VARCHAR(255),
    severity VARCHAR(255),
    message VARCHAR(255),
    latitude DOUBLE PRECISION,
    longitude DOUBLE PRECISION,
    acknowledged VARCHAR(255),
    acknowledged_at VARCHAR(255),
    created_at VARCHAR(255)
);
