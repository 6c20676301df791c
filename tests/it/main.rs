mod capture;
mod support;
