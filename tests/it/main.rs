mod generate;
mod support;
